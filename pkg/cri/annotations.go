package cri

// ValidateAnnotations checks a pod's annotations as RunPodSandbox does: every
// vmpod.dev/* key must be one vmpod knows and every value must be valid. The
// error wraps errdefs.ErrInvalidArgument and names each problem. It lets
// tools and tests (pkg/manifests checks examples/) catch a bad pod spec
// before it reaches a node.
func ValidateAnnotations(ann map[string]string) error {
	_, err := parseAnnotations(ann)
	return err
}
