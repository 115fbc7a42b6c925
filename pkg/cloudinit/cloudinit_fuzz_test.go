package cloudinit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	mimemultipart "mime/multipart"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"go.yaml.in/yaml/v3"
)

// FuzzBuild builds seeds from a tenant's user-data, meta-data and network
// config (as the pod annotations give them), with or without vmpod's
// additions (environment, command, SSH key, share, device, resolver
// options, files) and in either datasource, and checks an accepted seed:
//   - Build is deterministic;
//   - the user-data is at most MaxUserDataBytes (without Files) and is
//     what it claims to be: the user's own bytes when vmpod adds nothing;
//     else a #cloud-config whose lists, read as cloud-init reads them
//     (the last of duplicate keys wins), hold the user's entries first and
//     vmpod's after them, or a
//     multipart/mixed message with the user's part (decoded: the user's
//     bytes) and vmpod's text/cloud-config part;
//   - the meta-data decodes, holds the user's keys with the user's
//     values and vmpod's identity keys otherwise;
//   - the user's network config is written as given.
//
// A refused input is InvalidArgument. flags: bit 0 ConfigDrive, bit 1
// vmpod's additions, bit 2 a file too.
func FuzzBuild(f *testing.F) {
	for _, ud := range []string{"", userCloudConfig, userScript, userMultipart, "#!/bin/sh\necho 'grüße'\n",
		"#cloud-config\nruncmd: [a]\nruncmd: [b]\n", "#cloud-config\nx: &k runcmd\n*k : [a]\n", "#cloud-config\nbootcmd: &x [[ls]]\nfoo: *x\n", "#cloud-config\n[1, 2]\n",
		"Content-Type: multipart/alternative; boundary=b\n\n--b\n\nx\n--b--\n"} {
		f.Add(ud, "", "", uint8(3))
	}
	f.Add("#cloud-config\n", "availability-zone: zone-a\nlocal-hostname: override\ntags: {team: web}\n", "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n", uint8(2))
	f.Add("#!/bin/sh\n", "instance-id: forged\nx: {1: a}\n", `{"links": []}`, uint8(7))
	f.Add("#cloud-config\nssh_authorized_keys: ~\nmanage_resolv_conf: true\n", "a: .nan", "", uint8(3))
	f.Fuzz(func(t *testing.T, userData, metaData, netConfig string, flags uint8) {
		in := Input{InstanceID: "pod-3f1c7a52", Hostname: "web-0", UserData: userData, NetworkConfig: netConfig}
		if flags&1 != 0 {
			in.Datasource = DatasourceConfigDrive
		}
		if flags&2 != 0 {
			in.Env = [][2]string{{"GREETING", `say "hi" to $USER`}}
			in.SSHKeys = []string{testKey(t, 1, "alice@example")}
			in.Shares = []Share{{Tag: "vol-data", MountPath: "/data", Type: "virtiofs"}}
			in.Devices = []Device{{Serial: "vol2", Path: "/mnt/raw/disk"}}
			in.DNS = &DNS{Servers: []string{"10.96.0.10"}, Options: []string{"ndots:5"}}
		}
		if flags&4 != 0 {
			in.Files = []File{{Path: "/etc/app/config.yaml", Content: bytes.Repeat([]byte("port: 8080\n"), 8000)}}
		}
		if metaData != "" {
			m, err := ParseMetaData(metaData)
			if err == nil {
				again, _ := ParseMetaData(metaData)
				if !reflect.DeepEqual(m, again) {
					t.Fatalf("ParseMetaData(%q) is not deterministic: %v, then %v", metaData, m, again)
				}
				if _, err := json.Marshal(m); err != nil {
					t.Fatalf("ParseMetaData(%q) gave what JSON cannot hold: %v", metaData, err)
				}
			}
			in.MetaData = m
		}

		seed, err := Build(in)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Build refused with %v, not InvalidArgument", err)
			}
			return
		}
		if again, err := Build(in); err != nil || !reflect.DeepEqual(seed, again) {
			t.Fatalf("Build is not deterministic (%v)", err)
		}
		ds, _ := ParseDatasource(in.Datasource)
		udPath, metaPath, netPath := noCloudUserData, noCloudMetaData, noCloudNetworkConfig
		if ds == DatasourceConfigDrive {
			udPath, metaPath, netPath = configDriveUserData, configDriveMetaData, configDriveNetworkData
		}
		ud := seed.Files[udPath]
		if len(in.Files) == 0 && len(ud) > MaxUserDataBytes {
			t.Fatalf("user-data of %d bytes accepted, above %d", len(ud), MaxUserDataBytes)
		}
		checkUserDataClaim(t, in, ds, ud)
		checkMetaData(t, in, ds, seed.Files[metaPath])
		if netConfig != "" && string(seed.Files[netPath]) != netConfig {
			t.Fatalf("network config %q written as %q", netConfig, seed.Files[netPath])
		}
	})
}

// checkUserDataClaim checks that the built user-data ud is what it
// claims to be, and carries the user's part and vmpod's additions.
func checkUserDataClaim(t *testing.T, in Input, ds string, ud []byte) {
	t.Helper()
	add := additions(in, ds, in.SSHKeys)
	if add.empty() && in.UserData != "" {
		if string(ud) != in.UserData {
			t.Fatalf("with nothing to add the user-data changed:\n%q\n%q", in.UserData, ud)
		}
		return
	}
	first, _, _ := strings.Cut(string(ud), "\n")
	if strings.TrimRight(first, " \t\r") == cloudConfigHeader {
		doc := cloudInitView(t, ud)
		if user := in.UserData; user != "" {
			if strings.HasPrefix(user, "#!") || isMultipart(user) && !strings.HasPrefix(user, cloudConfigHeader) {
				t.Fatalf("the user's %.20q became a #cloud-config", user)
			}
			udoc := cloudInitView(t, []byte(user))
			for _, k := range mergedKeys {
				ul, l := udoc[k], doc[k]
				if ul == nil || ul.Kind != yaml.SequenceNode {
					continue
				}
				if l == nil || l.Kind != yaml.SequenceNode || len(l.Content) < len(ul.Content) {
					t.Fatalf("%s: the user's list became %v", k, l)
				}
				for i, item := range ul.Content {
					if a, b := encodeNode(t, item), encodeNode(t, l.Content[i]); a != b {
						t.Fatalf("%s[%d]: the user's entry %q became %q", k, i, a, b)
					}
				}
			}
		}
		checkAdditions(t, in, ds, doc)
		return
	}
	mt, params, err := mime.ParseMediaType(textproto.MIMEHeader(readHeader(t, ud)).Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("user-data is neither #cloud-config nor multipart/mixed (%q, %v): %.200q", mt, err, ud)
	}
	if in.UserData == "" {
		t.Fatal("vmpod's additions alone were wrapped in a multipart message")
	}
	mr := mimemultipart.NewReader(bytes.NewReader(bodyOf(ud)), params["boundary"])
	var parts [][]byte
	var types []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart user-data: %v\n%q", err, ud)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Transfer-Encoding") == "base64" {
			if b, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b), "\n", "")); err != nil {
				t.Fatalf("part %d is not base64: %v", len(parts), err)
			}
		}
		parts = append(parts, b)
		types = append(types, p.Header.Get("Content-Type"))
	}
	if len(parts) != 2 || !strings.HasPrefix(types[1], "text/cloud-config") {
		t.Fatalf("multipart user-data has parts %q, want the user's and vmpod's text/cloud-config", types)
	}
	// The newline before a boundary belongs to the boundary.
	if user := in.UserData; strings.HasPrefix(user, "#!") && string(parts[0]) != user && string(parts[0]) != strings.TrimSuffix(user, "\n") {
		t.Fatalf("the user's script part is %q, want %q", parts[0], user)
	}
	if !bytes.HasPrefix(parts[1], []byte(cloudConfigHeader+"\n")) {
		t.Fatalf("vmpod's part is no #cloud-config: %.100q", parts[1])
	}
	doc := cloudInitView(t, parts[1])
	if doc["merge_how"] == nil {
		t.Fatal("vmpod's part has no merge_how")
	}
	checkAdditions(t, in, ds, doc)
}

// checkAdditions checks vmpod's additions in a cloud-config as cloud-init
// reads it: the command last in runcmd, the SSH key (NoCloud),
// /etc/environment in write_files.
func checkAdditions(t *testing.T, in Input, ds string, doc map[string]*yaml.Node) {
	t.Helper()
	items := func(key string) []*yaml.Node {
		if n := doc[key]; n != nil && n.Kind == yaml.SequenceNode {
			return n.Content
		}
		t.Fatalf("%s is not a list in the merged user-data: %v", key, doc[key])
		return nil
	}
	if ds == DatasourceNoCloud && len(in.SSHKeys) > 0 {
		if !slices.ContainsFunc(items("ssh_authorized_keys"), func(n *yaml.Node) bool { return n.Value == in.SSHKeys[0] }) {
			t.Fatal("ssh_authorized_keys lacks the pod's key")
		}
	}
	if len(in.Env) > 0 {
		if !slices.ContainsFunc(items("write_files"), func(n *yaml.Node) bool {
			var f struct{ Path string }
			return n.Decode(&f) == nil && f.Path == "/etc/environment"
		}) {
			t.Fatal("write_files lacks /etc/environment")
		}
	}
}

// cloudInitView reads a #cloud-config document's top-level keys as
// cloud-init's YAML reader does: the last of duplicate keys wins, aliases
// resolved.
func cloudInitView(t *testing.T, b []byte) map[string]*yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("the #cloud-config user-data does not decode: %v\n%s", err, b)
	}
	out := map[string]*yaml.Node{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return out
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		v := m.Content[i+1]
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		k := m.Content[i]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		out[k.Value] = v
	}
	return out
}

func encodeNode(t *testing.T, n *yaml.Node) string {
	t.Helper()
	b, err := yaml.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkMetaData checks the meta-data file: it decodes, the user's keys
// carry the user's values, and the generated identity is there otherwise.
func checkMetaData(t *testing.T, in Input, ds string, b []byte) {
	t.Helper()
	var meta map[string]any
	var err error
	if ds == DatasourceConfigDrive {
		err = json.Unmarshal(b, &meta)
	} else {
		err = yaml.Unmarshal(b, &meta)
	}
	if err != nil {
		t.Fatalf("meta-data does not decode: %v\n%s", err, b)
	}
	idKey := "instance-id"
	if ds == DatasourceConfigDrive {
		idKey = "uuid"
	}
	if _, ok := in.MetaData[idKey]; !ok && meta[idKey] != in.InstanceID {
		t.Fatalf("meta-data %s is %v, want %q", idKey, meta[idKey], in.InstanceID)
	}
	for k, v := range in.MetaData {
		if !reflect.DeepEqual(jsonRoundTrip(t, meta[k]), jsonRoundTrip(t, v)) {
			t.Fatalf("meta-data %s is %v, the user gave %v", k, meta[k], v)
		}
	}
}

func jsonRoundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// readHeader reads the MIME header at the top of b.
func readHeader(t *testing.T, b []byte) map[string][]string {
	t.Helper()
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(b))).ReadMIMEHeader()
	if err != nil {
		t.Fatalf("user-data MIME header: %v\n%.300q", err, b)
	}
	return hdr
}

// bodyOf returns what follows the MIME header of b.
func bodyOf(b []byte) []byte {
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return b[i+2:]
	}
	return nil
}
