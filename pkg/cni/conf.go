package cni

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
)

// confExtensions are the CNI config file kinds read, as the kubelet's
// runtimes do.
var confExtensions = []string{".conf", ".conflist", ".json"}

// loadConfList returns the first valid network config list in dir, by file
// name, and the file it came from. A single-plugin .conf/.json is wrapped
// in a list. No config at all is an error wrapping
// errdefs.ErrFailedPrecondition that names the directory.
func loadConfList(dir string) (*libcni.NetworkConfigList, string, error) {
	files, err := libcni.ConfFiles(dir, confExtensions)
	if err != nil {
		return nil, "", fmt.Errorf("read CNI config dir %s (cni_conf_dir): %w", dir, err)
	}
	slices.Sort(files)
	var problems []string
	for _, f := range files {
		list, err := loadOne(f)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		return list, f, nil
	}
	if len(problems) > 0 {
		return nil, "", fmt.Errorf("no valid CNI network config in %s (cni_conf_dir): %v: %w", dir, problems, errdefs.ErrFailedPrecondition)
	}
	return nil, "", fmt.Errorf("no CNI network config in %s (cni_conf_dir); install a CNI plugin's config there: %w", dir, errdefs.ErrFailedPrecondition)
}

func loadOne(file string) (*libcni.NetworkConfigList, error) {
	if filepath.Ext(file) == ".conflist" {
		list, err := libcni.ConfListFromFile(file)
		if err != nil {
			return nil, err
		}
		if len(list.Plugins) == 0 {
			return nil, fmt.Errorf("config list has no plugins")
		}
		return list, nil
	}
	conf, err := libcni.ConfFromFile(file)
	if err != nil {
		return nil, err
	}
	if conf.Network.Type == "" {
		return nil, fmt.Errorf("no plugin type")
	}
	return libcni.ConfListFromConf(conf)
}

// confListFromBytes parses a config list stored with a sandbox.
func confListFromBytes(b []byte) (*libcni.NetworkConfigList, error) {
	return libcni.ConfListFromBytes(b)
}

// fileExists reports whether path exists.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
