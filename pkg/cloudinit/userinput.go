package cloudinit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"mime"
	"net/textproto"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

// Datasource names: the seed layouts.
const (
	DatasourceNoCloud     = "nocloud"
	DatasourceConfigDrive = "configdrive"
)

// MaxUserDataBytes is the largest user-data vmpod writes, after merging its
// own additions.
const MaxUserDataBytes = 64 << 10

// userDataKind is how the user-data is interpreted.
type userDataKind int

const (
	userDataNone userDataKind = iota
	userDataCloudConfig
	userDataScript
	userDataMultipart
)

const cloudConfigHeader = "#cloud-config"

// mergedKeys are the cloud-config lists vmpod appends to; in a user's
// #cloud-config they must be lists (or absent/null).
var mergedKeys = []string{"bootcmd", "mounts", "runcmd", "ssh_authorized_keys", "write_files"}

// invalid joins problems into one InvalidArgument error, nil when there are none.
func invalid(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", errdefs.ErrInvalidArgument, strings.Join(problems, "; "))
}

// ParseDatasource checks a datasource name: "" is NoCloud.
func ParseDatasource(v string) (string, error) {
	switch v {
	case "", DatasourceNoCloud:
		return DatasourceNoCloud, nil
	case DatasourceConfigDrive:
		return DatasourceConfigDrive, nil
	}
	return "", fmt.Errorf("datasource %q is invalid: accepted values are %s, %s", v, DatasourceNoCloud, DatasourceConfigDrive)
}

// CheckUserData checks a user-data document: a #cloud-config whose lists
// vmpod appends to are lists, a "#!" script or a MIME multipart message,
// at most MaxUserDataBytes.
func CheckUserData(v string) error {
	_, _, err := parseUserData(v)
	return err
}

// parseUserData classifies the user-data; for a #cloud-config it
// returns the parsed document (a mapping node, possibly empty).
func parseUserData(v string) (userDataKind, *yaml.Node, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("user-data "+format, a...)
	}
	if len(v) > MaxUserDataBytes {
		return 0, nil, bad("is %d bytes, more than the %d bytes (64 KiB) allowed", len(v), MaxUserDataBytes)
	}
	firstLine, _, _ := strings.Cut(v, "\n")
	switch {
	case strings.TrimRight(firstLine, " \t\r") == cloudConfigHeader:
		doc, err := parseCloudConfig(v)
		if err != nil {
			return 0, nil, bad("%v", err)
		}
		return userDataCloudConfig, doc, nil
	case strings.HasPrefix(v, "#!"):
		return userDataScript, nil, nil
	case isMultipart(v):
		return userDataMultipart, nil, nil
	case hasMalformedMultipartHeader(v):
		return 0, nil, bad("looks like a MIME multipart message but its header block is malformed (every line up to the first empty line must be \"Name: value\")")
	}
	return 0, nil, bad(`is not accepted: it must start with "#cloud-config" (a cloud-config document), "#!" (a script), or be a MIME multipart message (Content-Type: multipart/...)`)
}

// parseCloudConfig parses a #cloud-config document into a mapping node and
// checks that the keys vmpod merges into are lists.
func parseCloudConfig(v string) (*yaml.Node, error) {
	// Drop the "#cloud-config" line: it would come back as a head comment.
	_, body, _ := strings.Cut(v, "\n")
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(body), &doc); err != nil {
		return nil, fmt.Errorf("is not valid YAML: %v", err)
	}
	var root *yaml.Node
	switch {
	case doc.Kind == 0: // empty document
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	case doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode:
		root = doc.Content[0]
	case doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && doc.Content[0].Tag == "!!null":
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	default:
		return nil, fmt.Errorf("is not a cloud-config: the document must be a YAML map")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, val := keyName(root.Content[i]), root.Content[i+1]
		if !slices.Contains(mergedKeys, k) {
			continue
		}
		if seen[k] {
			// cloud-init's YAML reader keeps the last of duplicate keys,
			// and vmpod appends to the first.
			return nil, fmt.Errorf("has %q twice; cloud-init reads only the last one, so what vmpod appends would be lost: keep one", k)
		}
		seen[k] = true
		if val.Kind != yaml.SequenceNode && val.Tag != "!!null" {
			return nil, fmt.Errorf("has %q that is not a list; vmpod appends to it, so it must be a list", k)
		}
	}
	return root, nil
}

// keyName is the name of a mapping key node, through an alias ("*k: ...").
func keyName(n *yaml.Node) string {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n.Value
}

// ParseMetaData parses meta-data given by the user as a YAML map,
// returned in JSON-compatible form.
func ParseMetaData(v string) (map[string]any, error) {
	var probe any
	if err := yaml.Unmarshal([]byte(v), &probe); err != nil {
		return nil, fmt.Errorf("meta-data is not valid YAML: %v", err)
	}
	if _, ok := probe.(map[string]any); !ok {
		return nil, fmt.Errorf("meta-data is invalid: accepted is a YAML map of meta-data keys (e.g. \"availability-zone: a\")")
	}
	m, err := jsonCompatible(probe)
	if err != nil {
		return nil, fmt.Errorf("meta-data is invalid: %v", err)
	}
	return m.(map[string]any), nil
}

// jsonCompatible converts YAML-decoded values (maps with non-string keys
// included) into values encoding/json marshals.
func jsonCompatible(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	if _, err := json.Marshal(v); err != nil {
		return nil, err
	}
	return v, nil
}

// CheckNetworkConfig checks that a network config given by the user
// parses in the datasource's format.
func CheckNetworkConfig(ds, v string) error {
	if ds == DatasourceConfigDrive {
		var m map[string]any
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return fmt.Errorf("network config is invalid: with datasource %s it must be a network_data.json JSON object: %v", ds, err)
		}
		return nil
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(v), &m); err != nil || m == nil {
		msg := "empty"
		if err != nil {
			msg = err.Error()
		}
		return fmt.Errorf("network config is invalid: with datasource %s it must be a YAML network config (version 1 or 2) map: %s", ds, msg)
	}
	return nil
}

// ParseSSHKeys validates authorized_keys text and returns the keys, one
// per non-blank, non-comment line, trimmed.
func ParseSSHKeys(v string) ([]string, error) {
	var keys []string
	var bad []string
	for i, line := range strings.Split(v, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			bad = append(bad, fmt.Sprintf("line %d: %v", i+1, err))
			continue
		}
		keys = append(keys, line)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("SSH authorized keys are invalid (accepted: one OpenSSH authorized_keys public key per line) at %s", strings.Join(bad, ", "))
	}
	return keys, nil
}

// isMultipart reports whether v is a MIME message whose Content-Type is multipart/*.
func isMultipart(v string) bool {
	_, params, ok := multipartHeader(v)
	return ok && params["boundary"] != ""
}

// hasMalformedMultipartHeader reports whether v starts with a multipart
// Content-Type but its header block does not parse.
func hasMalformedMultipartHeader(v string) bool {
	hdr, err := textproto.NewReader(bufio.NewReader(strings.NewReader(v))).ReadMIMEHeader()
	if err == nil {
		return false
	}
	mt, _, _ := mime.ParseMediaType(hdr.Get("Content-Type"))
	return strings.HasPrefix(mt, "multipart/")
}

// multipartHeader reads the top-level Content-Type of a MIME message
// whose whole header block parses (a user's multipart is nested whole in
// vmpod's, where a malformed header would break the outer message).
func multipartHeader(v string) (string, map[string]string, bool) {
	hdr, err := textproto.NewReader(bufio.NewReader(strings.NewReader(v))).ReadMIMEHeader()
	if err != nil {
		return "", nil, false
	}
	mt, params, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return "", nil, false
	}
	return mt, params, true
}
