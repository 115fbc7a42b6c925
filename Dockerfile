# The vmpod image for the DaemonSet (deploy/base/20-daemonset.yaml): the vmpod
# binary with libvirt, QEMU and the tools vmpod calls. One image serves both
# of the DaemonSet's containers (libvirt and vmpod).
#
#   docker build -t registry.example/vmpod:v0.1.0 .
#
# Without a registry (or a docker daemon), hack/build-image.sh builds the
# same image from Debian's packages: it reproduces this file's final stage
# (hack/imagebuild refuses instructions it cannot reproduce), so keep the
# package list in deploy/image/packages and the final stage to COPY,
# ENTRYPOINT, CMD, ENV and LABEL. docs/install.md#the-image says what the
# image holds and weighs.
#
# The same binary is the node's CRI router (vmpod router); docs/install.md
# says how to copy it out of the image onto the host.

FROM golang:1.26-bookworm AS build
# cgo: libvirt.org/go/libvirt links against libvirt.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libvirt-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
ARG VERSION=0.1.0-dev
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-X github.com/vmpod/vmpod/pkg/version.Version=${VERSION}" -o /out/vmpod ./cmd/vmpod

FROM debian:12
# No documentation, manual pages or translations (dpkg-slim.cfg), also not
# those debian:12 came with (hack/build-image.sh's base has none either);
# the package list is shared with hack/build-image.sh.
COPY deploy/image/dpkg-slim.cfg /etc/dpkg/dpkg.cfg.d/vmpod-slim
COPY deploy/image/packages /usr/share/vmpod/packages
RUN apt-get update -qq \
 && grep -v -e '^#' -e '^$' /usr/share/vmpod/packages \
    | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y -qq --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* \
 && find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete \
 && for d in /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian; do \
      if [ -d "$d" ]; then find "$d" -mindepth 1 -delete; fi; done
COPY --from=build /out/vmpod /usr/local/bin/vmpod
COPY deploy/image/start-libvirt /usr/local/bin/start-libvirt
# Moves each VM out of the libvirt container's cgroups, so that VMs survive
# a restart of the DaemonSet's pod (docs/install.md).
COPY deploy/image/libvirt-qemu-hook /etc/libvirt/hooks/qemu
ENTRYPOINT ["/usr/local/bin/vmpod"]
CMD ["serve"]
