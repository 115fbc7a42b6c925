// Package image owns vmpod's image store: content-addressed disk image files
// under <state_dir>/images, their metadata records (names, origins), and
// the decision of where an image comes from.
//
// Pull asks the image translator (pkg/imagetranslation) whether a rule
// matches the name: if one does, the image is downloaded over HTTP(S) by
// pkg/image/httppull; if none does, the name is an OCI reference pulled
// from its registry by pkg/image/oci. Both pullers hand back a temporary
// file and its digest; the store checks it (Checker: the format decided in
// process, a qcow2's header and tables read by pkg/image/qcow2, then
// `qemu-img check -f qcow2` under resource limits), renames it into place
// and records it. Concurrent pulls of one image share one download (flight.go).
//
// # Identity
//
// Images are named by verified content, never by a claim, because the
// store is shared by every tenant of the node:
//
//   - An HTTP(S) image's ID is the sha256 of the bytes received; a
//     download is attached to a stored record only when that record's ID
//     is the digest of its own file (the same bytes).
//   - An OCI image's ID is its config digest, as in containerd, but only
//     after the puller fetched the config, checked it against the digest
//     and checked every layer it read against the config's diff_ids; such
//     records are marked Verified. A stored record is reused only when it
//     is Verified and either its repository served it before (then no
//     layer is downloaded) or a full verified pull yields the same disk.
//     Records without the mark (stored by older versions) are dropped at
//     start-up.
//   - A pinned HTTP(S) pull (name@sha256:<hex>) is answered from the store
//     only for a name that pinned that digest before or a URL that served
//     it. An OCI pull always asks the registry for the manifest with the
//     caller's credentials, pinned or not, so a digest is no way around a
//     pull secret.
//
// Origins (shown by `crictl inspecti`) keep URLs without user info or
// query string (imagetranslation.RedactURL).
//
// # Limits
//
// Options.Limits (max_image_size, pull_request_timeout,
// pull_stall_timeout) bound both pullers; the store adds a free-space
// check: a pull that would leave less than 5% of the file system (at most
// 1 GiB) free fails with ResourceExhausted, before the download when its
// size is known and every 32 MiB during it.
//
// Sub-packages: httppull and oci are the pullers; transfer holds what they
// share (the progress log line, the classification of transfer failures,
// the limits and deadlines); diskcopy streams a disk into a file while
// hashing it; qcow2 reads qcow2 headers and tables.
//
// Layout:
//
//	images/sha256/<hex>   the image files, read-only, named by their digest
//	images/tmp/           downloads in progress (emptied at start-up)
package image
