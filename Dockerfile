# The vmpod image for the DaemonSet (deploy/20-daemonset.yaml): the vmpod
# binary with libvirt, QEMU and the tools vmpod calls. One image serves both
# of the DaemonSet's containers (libvirt and vmpod).
#
#   docker build -t vmpod:latest .
#
# The same binary is the node's CRI router (vmpod router); install it on the
# host from this image: docker run --rm --entrypoint cat vmpod:latest /usr/local/bin/vmpod > vmpod

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
RUN CGO_ENABLED=1 go build -trimpath -o /out/vmpod ./cmd/vmpod

FROM debian:12
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libvirt-daemon-system qemu-system-x86 qemu-utils genisoimage ovmf \
      containernetworking-plugins iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/vmpod /usr/local/bin/vmpod
COPY deploy/image/start-libvirt /usr/local/bin/start-libvirt
ENTRYPOINT ["/usr/local/bin/vmpod"]
CMD ["serve"]
