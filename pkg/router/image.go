package router

// The ImageService. An image call goes to vmpod when the image is vmpod's
// by its spec (vmImage), otherwise to the primary, with two fallbacks for
// kubelets that do not put the RuntimeClass handler in ImageSpec (it does
// only with the RuntimeClassInImageCriApi feature gate):
//
//   - PullImage carries the pod's sandbox config: when vmpod runs that pod,
//     the image is for a VM.
//   - ImageStatus and RemoveImage of an image the primary does not have go
//     to vmpod when vmpod has it. The kubelet asks ImageStatus before it
//     pulls and uses the ID it gets in CreateContainer, so a VM pod finds
//     vmpod's image; image garbage collection removes vmpod's images by ID.

import (
	"context"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type is = runtimeapi.ImageServiceClient

// vmImage tells whether spec names a vmpod image by itself: its runtime
// handler is one of vmpod's, or a vmpod image translation rule matches the
// name.
func (r *Router) vmImage(spec *runtimeapi.ImageSpec) bool {
	if r.handlers[spec.GetRuntimeHandler()] {
		return true
	}
	return r.translator != nil && r.translator.Matches(spec.GetImage())
}

// vmHasImage returns vmpod's ImageStatus answer and whether vmpod has the
// image (false when it cannot say).
func (r *Router) vmHasImage(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, bool) {
	vctx, cancel := r.vmContext(ctx)
	defer cancel()
	resp, err := r.vm.img.ImageStatus(vctx, req)
	return resp, err == nil && resp.GetImage() != nil
}

// vmRunsPod tells whether vmpod runs a sandbox of the pod cfg describes
// (false when it cannot say).
func (r *Router) vmRunsPod(ctx context.Context, cfg *runtimeapi.PodSandboxConfig) bool {
	uid := cfg.GetMetadata().GetUid()
	if uid == "" {
		return false
	}
	vctx, cancel := r.vmContext(ctx)
	defer cancel()
	resp, err := r.vm.rt.ListPodSandbox(vctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return false
	}
	for _, sb := range resp.GetItems() {
		if sb.GetMetadata().GetUid() == uid {
			return true
		}
	}
	return false
}

// PullImage goes to vmpod for a vmpod image or a pod vmpod runs.
func (r *Router) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	b := r.primary
	if r.vmImage(req.GetImage()) || r.vmRunsPod(ctx, req.GetSandboxConfig()) {
		b = r.vm
	}
	resp, err := b.img.PullImage(ctx, req)
	return resp, b.wrap(err)
}

// ImageStatus goes to vmpod for a vmpod image; otherwise it is the
// primary's answer, unless only vmpod has the image.
func (r *Router) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	if r.vmImage(req.GetImage()) {
		resp, err := r.vm.img.ImageStatus(ctx, req)
		return resp, r.vm.wrap(err)
	}
	resp, err := r.primary.img.ImageStatus(ctx, req)
	if err == nil && resp.GetImage() != nil {
		return resp, nil
	}
	if vresp, ok := r.vmHasImage(ctx, req); ok {
		return vresp, nil
	}
	return resp, r.primary.wrap(err)
}

// RemoveImage goes to vmpod for a vmpod image, or for an image only vmpod
// has; otherwise to the primary.
func (r *Router) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	b := r.primary
	if r.vmImage(req.GetImage()) {
		b = r.vm
	} else if st, err := r.primary.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: req.GetImage()}); err != nil || st.GetImage() == nil {
		if _, ok := r.vmHasImage(ctx, &runtimeapi.ImageStatusRequest{Image: req.GetImage()}); ok {
			b = r.vm
		}
	}
	resp, err := b.img.RemoveImage(ctx, req)
	return resp, b.wrap(err)
}

// ListImages merges both runtimes' images.
func (r *Router) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return merge(ctx, r, "ListImages", imageClient, req, is.ListImages,
		func(p, v *runtimeapi.ListImagesResponse) { p.Images = append(p.Images, v.Images...) })
}

// StreamImages streams the merged ListImages answer.
func (r *Router) StreamImages(req *runtimeapi.StreamImagesRequest, srv grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	resp, err := r.ListImages(srv.Context(), &runtimeapi.ListImagesRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.Images, func(c []*runtimeapi.Image) *runtimeapi.StreamImagesResponse {
		return &runtimeapi.StreamImagesResponse{Images: c}
	}, srv.Send)
}

// ImageFsInfo merges both runtimes' filesystems, the primary's first (the
// kubelet's image garbage collection and eviction read the first one).
func (r *Router) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return merge(ctx, r, "ImageFsInfo", imageClient, req, is.ImageFsInfo,
		func(p, v *runtimeapi.ImageFsInfoResponse) {
			p.ImageFilesystems = append(p.ImageFilesystems, v.ImageFilesystems...)
			p.ContainerFilesystems = append(p.ContainerFilesystems, v.ContainerFilesystems...)
		})
}
