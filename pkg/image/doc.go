// Package image owns vmpod's image store: content-addressed disk image files
// under <state_dir>/images, their metadata records (names, origins), and
// the decision of where an image comes from. An image's ID is "sha256:<hex>"
// of its file for an HTTP(S) image, its config digest for an OCI image.
//
// Pull asks the image translator (pkg/imagetranslation) whether a rule
// matches the name: if one does, the image is downloaded over HTTP(S) by
// pkg/image/httppull; if none does, the name is an OCI reference pulled
// from its registry by pkg/image/oci. Both pullers hand back a temporary
// file and its digest; the store checks it (Checker: qemu-img under
// resource limits), renames it into place and records it. Concurrent pulls
// of one image share one download (flight.go).
//
// Sub-packages: httppull and oci are the pullers; transfer holds what they
// share (the progress log line, the classification of transfer failures);
// diskcopy streams a disk into a file while hashing it.
//
// Layout:
//
//	images/sha256/<hex>   the image files, read-only, named by their digest
//	images/tmp/           downloads in progress (emptied at start-up)
package image
