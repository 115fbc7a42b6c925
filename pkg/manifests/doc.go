// Package manifests has no code: its tests check the Kubernetes manifests
// in deploy/ and examples/ (strict decoding into the k8s.io/api types, the
// embedded vmpod configuration and image translation rules, and that the
// pieces agree with each other), so they run with the unit tests.
package manifests
