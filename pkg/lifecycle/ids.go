package lifecycle

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DomainPrefix starts the name of every libvirt domain vmpod owns. At
// start-up, domains with this prefix and no record are removed; domains
// without it are never touched.
const DomainPrefix = "vmpod-"

// newID returns a random 64-hex-digit ID, as container runtimes use.
func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// DomainName is the libvirt domain name of a container.
func DomainName(containerID string) string { return DomainPrefix + containerID }

// DomainUUID derives a stable UUID from a container ID.
func DomainUUID(containerID string) string {
	h := sha256.Sum256([]byte("vmpod-domain/" + containerID))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x50 // version 5 (name-based, SHA)
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// sandboxName is the reserved name of a sandbox.
func sandboxName(m *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%d", m.GetName(), m.GetNamespace(), m.GetUid(), m.GetAttempt())
}

// containerName is the reserved name of a container.
func containerName(c *runtimeapi.ContainerMetadata, sb *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%s_%d", c.GetName(), sb.GetName(), sb.GetNamespace(), sb.GetUid(), c.GetAttempt())
}
