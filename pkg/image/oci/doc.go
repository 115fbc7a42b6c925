// Package oci pulls KubeVirt-style "containerDisk" images from OCI/Docker
// registries: an image whose layers hold exactly one regular file under
// /disk/ (a qcow2 or raw disk). A checkpoint image is pulled the same
// way: its one regular file is under /checkpoint/ (a vmpod checkpoint
// archive); Result.Kind says which. It owns talking to the registry (through
// containers/image's docker transport, so registries.conf, registries.d,
// certs.d, mirrors, blocked and insecure registries and short-name
// resolution behave as in podman and cri-o), choosing the platform's
// manifest, and streaming the disk file out of the layers into one
// temporary file. Storing that file is the caller's job (pkg/image).
//
// # Identity
//
// A pull reports the manifest digest (after choosing the platform's entry
// of a multi-arch index), the digest of the index itself when the name
// pointed at one, the config digest, the repo tag and the repo digest
// (repo@manifest-digest). The config digest is the image ID, as in
// containerd: it identifies the image's content independently of how it
// was pushed (re-pushing the same image with other compression changes the
// manifest digest but not the config digest).
//
// A manifest can claim any config digest, so Pull does not take the claim:
// it fetches the config blob (at most 4 MiB), checks it against its digest,
// requires an image config whose rootfs lists one diff_id per layer, and
// checks every layer it reads against its diff_id (the digest of the
// uncompressed tar) as well as its blob digest. The disk is a function of
// the layers read, so a verified config digest identifies the disk: a
// registry that names another image's config (or a public disk file's
// bytes) as its config, with its own layers, fails with InvalidArgument.
// Resolve only reads manifests and reports the claim; callers must not
// trust its ConfigDigest as an identity.
//
// # Finding the disk
//
// The layers are read from the top (last) layer down. Whiteouts
// (".wh.<name>" hides <name> of lower layers, ".wh..wh..opq" hides a whole
// directory's lower contents) and entries of upper layers that replace a
// path are honoured, so the disk is the one a container would see in
// /disk/. The first layer (from the top) that holds a visible regular file
// under /disk/ provides it and lower layers are not downloaded; a second
// /disk/ file in that layer, or no /disk/ file at all, is an error wrapping
// errdefs.ErrInvalidArgument that names the files found.
//
// Each layer blob is read once: its bytes are checked against the
// manifest's digest while they stream through the decompressor
// (gzip, zstd, bzip2, xz or none, detected from the data) and the tar
// reader, and the disk entry's bytes go straight into the temporary file
// (all-zero blocks become holes) while their sha256 is computed. A blob
// whose bytes do not match its digest fails the pull.
//
// # Limits
//
// Options.Limits bound a pull: no blob, no layer's uncompressed stream
// (plus 1 MiB for tar headers) and no disk file may exceed max_image_size
// (a decompression bomb stops there, and a disk entry whose tar header
// announces more is refused before a byte is written); the free space is
// asked before the disk is written and every 32 MiB; each registry
// exchange that is not a layer download (ping, token, manifests, config)
// must finish within pull_request_timeout, and a layer download may go
// pull_stall_timeout without a byte. Those deadlines fail the pull with
// Unavailable, never DeadlineExceeded, and remove the partial file. Layers' foreign URLs
// (non-distributable layers) are ignored: every blob comes from the
// registry, so an image cannot make vmpod fetch arbitrary URLs.
//
// # Names
//
// Fully-qualified names ("quay.io/vms/debian:12",
// "registry:5000/vms/debian@sha256:...") are used as given; a name with
// both a tag and a digest is pulled by digest and gets no repo tag, as in
// containerd. A short name ("vms/debian") is resolved with registries.conf,
// never interactively: an [aliases] entry wins; otherwise
// unqualified-search-registries are tried in order, unless there are
// several and short-name-mode is "enforcing", in which case the name is
// rejected as ambiguous (errdefs.ErrInvalidArgument).
//
// # Build
//
// The package imports only the parts of containers/image that need no C
// library (the docker transport, manifest, types, pkg/compression,
// pkg/sysregistriesv2; not signature, storage or alltransports), so a
// plain `go build` works without build tags, gpgme, btrfs or devicemapper
// headers. With cgo enabled, go.podman.io/storage/pkg/unshare adds a
// small C constructor that only needs libc.
package oci
