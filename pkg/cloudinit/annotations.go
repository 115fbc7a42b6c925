package cloudinit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"mime"
	"net/textproto"
	"strings"

	"github.com/containerd/errdefs"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

// The cloud-init annotations a pod (or container) may carry. Their names are
// user interface: keep them stable.
const (
	// AnnotationUserData is the whole user-data: a "#cloud-config" document,
	// a "#!" script, or a MIME multipart message ("Content-Type: multipart/...").
	AnnotationUserData = "vmpod.dev/cloud-init-user-data"
	// AnnotationMetaData is a YAML map merged over the generated meta-data
	// (its top-level keys win).
	AnnotationMetaData = "vmpod.dev/cloud-init-meta-data"
	// AnnotationNetworkConfig replaces the generated network configuration:
	// YAML (network config v1/v2) for NoCloud, network_data.json for ConfigDrive.
	AnnotationNetworkConfig = "vmpod.dev/cloud-init-network-config"
	// AnnotationSSHAuthorizedKeys holds newline-separated SSH public keys in
	// authorized_keys format; blank lines and lines starting with # are skipped.
	AnnotationSSHAuthorizedKeys = "vmpod.dev/ssh-authorized-keys"
	// AnnotationDatasource selects the seed layout: DatasourceNoCloud (default)
	// or DatasourceConfigDrive.
	AnnotationDatasource = "vmpod.dev/cloud-init-datasource"
)

// Annotations lists every annotation this package reads, for the CRI layer's
// check of unknown vmpod.dev/* keys.
var Annotations = []string{
	AnnotationUserData,
	AnnotationMetaData,
	AnnotationNetworkConfig,
	AnnotationSSHAuthorizedKeys,
	AnnotationDatasource,
}

// Datasource names, the values of AnnotationDatasource.
const (
	DatasourceNoCloud     = "nocloud"
	DatasourceConfigDrive = "configdrive"
)

// MaxUserDataBytes is the largest user-data vmpod writes, after merging its
// own additions.
const MaxUserDataBytes = 64 << 10

// userDataKind is how the user-data annotation is interpreted.
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

// ValidateAnnotations checks the cloud-init annotations in ann (other keys
// are ignored) and reports every problem at once in one error wrapping
// errdefs.ErrInvalidArgument; each problem names the annotation and what it
// accepts.
func ValidateAnnotations(ann map[string]string) error {
	var problems []string
	ds, err := datasource("", ann)
	if err != nil {
		problems = append(problems, err.Error())
		ds = DatasourceNoCloud
	}
	if v, ok := ann[AnnotationUserData]; ok {
		if _, _, err := parseUserData(v); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if v, ok := ann[AnnotationMetaData]; ok {
		if _, err := parseMetaData(v); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if v, ok := ann[AnnotationNetworkConfig]; ok {
		if err := checkNetworkConfig(ds, v); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if v, ok := ann[AnnotationSSHAuthorizedKeys]; ok {
		if _, err := parseSSHKeys(v); err != nil {
			problems = append(problems, err.Error())
		}
	}
	return invalid(problems)
}

// invalid joins problems into one InvalidArgument error, nil when there are none.
func invalid(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", errdefs.ErrInvalidArgument, strings.Join(problems, "; "))
}

// datasource resolves the datasource: explicit wins, then the annotation,
// then NoCloud.
func datasource(explicit string, ann map[string]string) (string, error) {
	v := explicit
	name := "datasource"
	if v == "" {
		v = ann[AnnotationDatasource]
		name = "annotation " + AnnotationDatasource
	}
	switch v {
	case "", DatasourceNoCloud:
		return DatasourceNoCloud, nil
	case DatasourceConfigDrive:
		return DatasourceConfigDrive, nil
	}
	return "", fmt.Errorf("%s=%q is invalid: accepted values are %s, %s", name, v, DatasourceNoCloud, DatasourceConfigDrive)
}

// parseUserData classifies the user-data annotation; for a #cloud-config it
// returns the parsed document (a mapping node, possibly empty).
func parseUserData(v string) (userDataKind, *yaml.Node, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("annotation "+AnnotationUserData+" "+format, a...)
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
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, val := root.Content[i].Value, root.Content[i+1]
		for _, m := range mergedKeys {
			if k == m && val.Kind != yaml.SequenceNode && val.Tag != "!!null" {
				return nil, fmt.Errorf("has %q that is not a list; vmpod appends to it, so it must be a list", k)
			}
		}
	}
	return root, nil
}

// parseMetaData parses the meta-data annotation as a YAML map, returned in
// JSON-compatible form.
func parseMetaData(v string) (map[string]any, error) {
	var probe any
	if err := yaml.Unmarshal([]byte(v), &probe); err != nil {
		return nil, fmt.Errorf("annotation %s is not valid YAML: %v", AnnotationMetaData, err)
	}
	if _, ok := probe.(map[string]any); !ok {
		return nil, fmt.Errorf("annotation %s is invalid: accepted is a YAML map of meta-data keys (e.g. \"availability-zone: a\")", AnnotationMetaData)
	}
	m, err := jsonCompatible(probe)
	if err != nil {
		return nil, fmt.Errorf("annotation %s is invalid: %v", AnnotationMetaData, err)
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

// checkNetworkConfig checks that the network-config annotation parses in
// the datasource's format.
func checkNetworkConfig(ds, v string) error {
	if ds == DatasourceConfigDrive {
		var m map[string]any
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return fmt.Errorf("annotation %s is invalid: with datasource %s it must be a network_data.json JSON object: %v", AnnotationNetworkConfig, ds, err)
		}
		return nil
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(v), &m); err != nil || m == nil {
		msg := "empty"
		if err != nil {
			msg = err.Error()
		}
		return fmt.Errorf("annotation %s is invalid: with datasource %s it must be a YAML network config (version 1 or 2) map: %s", AnnotationNetworkConfig, ds, msg)
	}
	return nil
}

// parseSSHKeys validates the authorized keys annotation and returns the keys,
// one per non-blank, non-comment line, trimmed.
func parseSSHKeys(v string) ([]string, error) {
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
		return nil, fmt.Errorf("annotation %s has invalid keys (accepted: one OpenSSH authorized_keys public key per line) at %s", AnnotationSSHAuthorizedKeys, strings.Join(bad, ", "))
	}
	return keys, nil
}

// isMultipart reports whether v is a MIME message whose Content-Type is multipart/*.
func isMultipart(v string) bool {
	_, params, ok := multipartHeader(v)
	return ok && params["boundary"] != ""
}

// multipartHeader reads the top-level Content-Type of a MIME message.
func multipartHeader(v string) (string, map[string]string, bool) {
	hdr, err := textproto.NewReader(bufio.NewReader(strings.NewReader(v))).ReadMIMEHeader()
	if err != nil && len(hdr) == 0 {
		return "", nil, false
	}
	mt, params, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return "", nil, false
	}
	return mt, params, true
}
