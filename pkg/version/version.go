// Package version holds vmpod's version, set at build time with
// -ldflags "-X github.com/vmpod/vmpod/pkg/version.Version=...".
package version

// Version is vmpod's release version.
var Version = "0.1.0-dev"

// RuntimeName is the name vmpod reports in the CRI Version call.
const RuntimeName = "vmpod"

// CRIVersion is the CRI API version vmpod serves.
const CRIVersion = "v1"
