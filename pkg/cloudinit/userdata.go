package cloudinit

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"
)

// cloudConfig is vmpod's additions, in the order they are written.
type cloudConfig struct {
	MergeHow          []mergeRule   `yaml:"merge_how,omitempty"`
	SSHAuthorizedKeys []string      `yaml:"ssh_authorized_keys,omitempty"`
	WriteFiles        []writeFile   `yaml:"write_files,omitempty"`
	Bootcmd           [][]string    `yaml:"bootcmd,omitempty"`
	Mounts            [][]string    `yaml:"mounts,omitempty"`
	Runcmd            [][]string    `yaml:"runcmd,omitempty"`
	ManageResolvConf  bool          `yaml:"manage_resolv_conf,omitempty"`
	ResolvConf        *resolvConfig `yaml:"resolv_conf,omitempty"`

	// blobs are write_files contents, base64-encoded. The YAML carries a
	// placeholder for each, replaced after encoding: the YAML emitter
	// inspects every character of a scalar and takes ~50 ms per MiB.
	blobs []string
	// nonce makes the placeholders unique to the user's document.
	nonce string
}

// blob records base64 content and returns its placeholder: a plain YAML
// scalar that the encoder writes as is.
func (c *cloudConfig) blob(content []byte) string {
	c.blobs = append(c.blobs, base64.StdEncoding.EncodeToString(content))
	return c.placeholder(len(c.blobs) - 1)
}

func (c *cloudConfig) placeholder(i int) string {
	return fmt.Sprintf("vmpod-blob-%s-%d-end", c.nonce, i)
}

// fillBlobs replaces the placeholders in encoded YAML with the
// double-quoted base64 contents (base64 needs no escaping there).
func (c *cloudConfig) fillBlobs(doc []byte) []byte {
	if len(c.blobs) == 0 {
		return doc
	}
	pairs := make([]string, 0, 2*len(c.blobs))
	for i, b := range c.blobs {
		pairs = append(pairs, c.placeholder(i), `"`+b+`"`)
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(doc)))
}

// mergeRule is one entry of cloud-init's merge_how.
type mergeRule struct {
	Name     string   `yaml:"name"`
	Settings []string `yaml:"settings"`
}

// writeFile is a cloud-init write_files entry.
type writeFile struct {
	Path        string `yaml:"path"`
	Content     string `yaml:"content"`
	Encoding    string `yaml:"encoding"`
	Permissions string `yaml:"permissions"`
	Append      bool   `yaml:"append,omitempty"`
	Defer       bool   `yaml:"defer"`
}

// resolvConfig is cc_resolv_conf's resolv_conf.
type resolvConfig struct {
	Nameservers   []string       `yaml:"nameservers,omitempty"`
	Searchdomains []string       `yaml:"searchdomains,omitempty"`
	Options       map[string]any `yaml:"options,omitempty"`
}

// empty reports whether vmpod has nothing to add.
func (c *cloudConfig) empty() bool {
	return len(c.SSHAuthorizedKeys) == 0 && len(c.WriteFiles) == 0 && len(c.Bootcmd) == 0 &&
		len(c.Mounts) == 0 && len(c.Runcmd) == 0 && c.ResolvConf == nil
}

// additions is vmpod's own cloud-config for in.
func additions(in Input, ds string, keys []string) *cloudConfig {
	sum := sha256.Sum256([]byte(in.UserData))
	c := &cloudConfig{nonce: hex.EncodeToString(sum[:8])}
	if ds == DatasourceNoCloud {
		c.SSHAuthorizedKeys = keys
	}
	if len(in.Env) > 0 {
		var b strings.Builder
		for _, kv := range in.Env {
			fmt.Fprintf(&b, "%s=%s\n", kv[0], quoteEnv(kv[1]))
		}
		c.WriteFiles = append(c.WriteFiles, writeFile{
			Path:        "/etc/environment",
			Content:     c.blob([]byte(b.String())),
			Encoding:    "b64",
			Permissions: "0644",
			Append:      true, // keep the image's entries (Ubuntu's PATH)
		})
	}
	for _, f := range in.Files {
		c.WriteFiles = append(c.WriteFiles, writeFile{
			Path:        f.Path,
			Content:     c.blob(f.Content),
			Encoding:    "b64",
			Permissions: octalMode(f.Mode),
		})
	}
	for _, s := range in.Shares {
		c.Bootcmd = append(c.Bootcmd, []string{"mkdir", "-p", s.MountPath})
		opts := "rw"
		if s.ReadOnly {
			opts = "ro"
		}
		if s.Type == "9p" {
			opts = "trans=virtio,version=9p2000.L," + opts
		}
		// nofail: a missing share must not drop the guest into emergency mode.
		c.Mounts = append(c.Mounts, []string{s.Tag, s.MountPath, s.Type, opts + ",nofail", "0", "0"})
	}
	for _, s := range in.Shares {
		// A share the guest could not mount (no driver in its kernel, say)
		// is said on the serial console, which is the container's log;
		// vmpod reports the line (ShareNotMountedPrefix).
		c.Runcmd = append(c.Runcmd, []string{"sh", "-c", shareCheck, "vmpod-share-check", s.MountPath, s.Tag, s.Type})
	}
	for _, d := range in.Devices {
		// bootcmd, not runcmd: /dev is rebuilt on every boot.
		if dir := path.Dir(d.Path); dir != "/" && dir != "/dev" {
			c.Bootcmd = append(c.Bootcmd, []string{"mkdir", "-p", dir})
		}
		c.Bootcmd = append(c.Bootcmd, []string{"ln", "-sf", "/dev/disk/by-id/virtio-" + d.Serial, d.Path})
	}
	if in.DNS != nil && len(in.DNS.Options) > 0 {
		// Network config v2 and network_data.json have no place for resolver
		// options; cc_resolv_conf writes them on the distros it supports.
		opts := map[string]any{}
		for _, o := range in.DNS.Options {
			k, v, ok := strings.Cut(o, ":")
			if ok {
				opts[k] = v
			} else {
				opts[k] = true
			}
		}
		c.ManageResolvConf = true
		c.ResolvConf = &resolvConfig{Nameservers: in.DNS.Servers, Searchdomains: in.DNS.Searches, Options: opts}
	}
	return c
}

// ShareNotMountedPrefix starts the console line a guest writes for a share
// it could not mount: "vmpod: share TAG (TYPE) is not mounted at PATH".
const ShareNotMountedPrefix = "vmpod: share "

// shareCheck runs in the guest after mounts, as sh -c shareCheck NAME
// PATH TAG TYPE.
const shareCheck = `mountpoint -q "$1" 2>/dev/null || echo "vmpod: share $2 ($3) is not mounted at $1" >/dev/console`

// quoteEnv double-quotes an /etc/environment value so that pam_env, systemd
// and a POSIX shell sourcing the file read it back unchanged.
func quoteEnv(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")
	return `"` + r.Replace(v) + `"`
}

// octalMode renders m as the octal string write_files expects ("0644").
func octalMode(m os.FileMode) string {
	bits := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		bits |= 0o1000
	}
	if bits == 0 {
		bits = 0o644
	}
	return fmt.Sprintf("%04o", bits)
}

// buildUserData combines the user's user-data (possibly empty) with
// vmpod's additions.
func buildUserData(user string, add *cloudConfig) ([]byte, error) {
	kind, doc, err := userDataKind(0), (*yaml.Node)(nil), error(nil)
	if user != "" {
		kind, doc, err = parseUserData(user)
		if err != nil {
			return nil, err
		}
	}
	switch kind {
	case userDataCloudConfig:
		if add.empty() {
			return []byte(user), nil
		}
		b, err := mergeCloudConfig(doc, add)
		if err != nil {
			return nil, err
		}
		return add.fillBlobs(b), nil
	case userDataScript, userDataMultipart:
		if add.empty() {
			return []byte(user), nil
		}
		add.MergeHow = []mergeRule{
			{Name: "list", Settings: []string{"append"}},
			{Name: "dict", Settings: []string{"no_replace", "recurse_list"}},
		}
		cc, err := encodeCloudConfig(add)
		if err != nil {
			return nil, err
		}
		return multipart(user, kind, add.fillBlobs(cc)), nil
	}
	b, err := encodeCloudConfig(add)
	if err != nil {
		return nil, err
	}
	return add.fillBlobs(b), nil
}

// encodeCloudConfig writes c as a #cloud-config document.
func encodeCloudConfig(c *cloudConfig) ([]byte, error) {
	n, err := cloudConfigNode(c)
	if err != nil {
		return nil, err
	}
	return encodeDoc(n)
}

// cloudConfigNode encodes c as a mapping node, with the argv lists of
// bootcmd, runcmd and mounts on one line each ("- [mkdir, -p, /data]").
func cloudConfigNode(c *cloudConfig) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(c); err != nil {
		return nil, fmt.Errorf("encode cloud-config: %w", err)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "bootcmd", "runcmd", "mounts":
			for _, item := range n.Content[i+1].Content {
				item.Style = yaml.FlowStyle
			}
		}
	}
	return &n, nil
}

// encodeDoc writes a mapping node as a #cloud-config document.
func encodeDoc(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(cloudConfigHeader + "\n")
	if len(n.Content) == 0 {
		return b.Bytes(), nil
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode cloud-config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode cloud-config: %w", err)
	}
	return b.Bytes(), nil
}

// mergeCloudConfig appends vmpod's lists to the user's document (a mapping
// node from parseCloudConfig) and adds the keys it lacks; the user's scalar
// and map values win.
func mergeCloudConfig(doc *yaml.Node, add *cloudConfig) ([]byte, error) {
	an, err := cloudConfigNode(add)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(an.Content); i += 2 {
		key, val := an.Content[i], an.Content[i+1]
		j := mapIndex(doc, key.Value)
		switch {
		case j < 0:
			doc.Content = append(doc.Content, key, val)
		case val.Kind == yaml.SequenceNode:
			uv := doc.Content[j+1]
			if uv.Kind != yaml.SequenceNode { // null (parseCloudConfig refused others)
				doc.Content[j+1] = val
				continue
			}
			uv.Content = append(uv.Content, val.Content...)
			uv.Style &^= yaml.FlowStyle // appended block items in a flow list read badly
		default:
			// The user's own value wins (manage_resolv_conf, resolv_conf).
		}
	}
	return encodeDoc(doc)
}

// mapIndex is the index of key's key node in mapping m, or -1.
func mapIndex(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if keyName(m.Content[i]) == key {
			return i
		}
	}
	return -1
}

// multipart wraps a user's script or multipart message and vmpod's
// cloud-config in one multipart/mixed message, the user's part first. A
// user's multipart is nested whole (cloud-init walks nested multiparts);
// other parts are base64-encoded unless they are plain ASCII, because
// cloud-init mangles non-ASCII 8bit payloads. The boundary is derived from
// the content (deterministic) and checked not to occur in it.
func multipart(user string, kind userDataKind, cc []byte) []byte {
	sum := sha256.Sum256(append([]byte(user), cc...))
	boundary := "==vmpod-" + hex.EncodeToString(sum[:12]) + "=="
	for strings.Contains(user, boundary) || bytes.Contains(cc, []byte(boundary)) {
		sum = sha256.Sum256([]byte(boundary))
		boundary = "==vmpod-" + hex.EncodeToString(sum[:12]) + "=="
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\nMIME-Version: 1.0\n\n", boundary)
	fmt.Fprintf(&b, "--%s\n", boundary)
	if kind == userDataMultipart {
		b.WriteString(user)
		if !strings.HasSuffix(user, "\n") {
			b.WriteString("\n")
		}
	} else {
		textPart(&b, "text/x-shellscript", "user-data", []byte(user))
	}
	fmt.Fprintf(&b, "--%s\n", boundary)
	textPart(&b, "text/cloud-config", "vmpod-cloud-config", cc)
	fmt.Fprintf(&b, "--%s--\n", boundary)
	return b.Bytes()
}

// textPart writes one MIME text part with its headers.
func textPart(b *bytes.Buffer, contentType, filename string, body []byte) {
	fmt.Fprintf(b, "Content-Type: %s; charset=\"utf-8\"\nMIME-Version: 1.0\n", contentType)
	if isASCII(body) {
		fmt.Fprintf(b, "Content-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"%s\"\n\n", filename)
		b.Write(body)
		if len(body) == 0 || body[len(body)-1] != '\n' {
			b.WriteByte('\n')
		}
		return
	}
	fmt.Fprintf(b, "Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"%s\"\n\n", filename)
	enc := base64.StdEncoding.EncodeToString(body)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\n")
}

// isASCII reports whether b is 7-bit text without NUL or bare CR.
func isASCII(b []byte) bool {
	for _, c := range b {
		if c == 0 || c >= 0x80 || c == '\r' {
			return false
		}
	}
	return true
}
