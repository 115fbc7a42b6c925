// Command imagebuild assembles the vmpod image without a container
// runtime or a registry, for hack/build-image.sh: it reads the
// Dockerfile's final stage (the files it copies, ENTRYPOINT, CMD, ENV,
// LABEL) and puts those files as one layer over a base layer that the
// script made from the same Debian packages (deploy/image/packages), then
// writes an OCI archive that `ctr images import`, skopeo and podman load.
// An instruction it cannot reproduce is an error, so the Dockerfile and
// this build give the same file system, command and environment.
//
//	imagebuild -base base.tar.gz -from build:/out/vmpod=_output/vmpod \
//	    -ref vmpod:v0.1.0 -label org.opencontainers.image.version=v0.1.0 -out vmpod.tar
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// pairs is a repeatable key=value flag.
type pairs map[string]string

func (p pairs) String() string { return fmt.Sprint(map[string]string(p)) }

func (p pairs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	p[k] = v
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	dockerfile := fs.String("dockerfile", "Dockerfile", "the Dockerfile whose final stage to reproduce")
	contextDir := fs.String("context", ".", "the build context (COPY sources without --from)")
	base := fs.String("base", "", "the base layer: a gzipped tar of the root file system the final stage's FROM and RUN make")
	baseName := fs.String("base-name", "debian:12", "the image the base layer stands for; the final stage must start FROM it")
	ref := fs.String("ref", "", "the image's name and tag, e.g. vmpod:v0.1.0")
	out := fs.String("out", "", "the OCI archive to write")
	epoch := fs.Int64("created", 0, "the image's creation time in Unix seconds (e.g. the commit's time); timestamps come from it")
	from, labels := pairs{}, pairs{}
	fs.Var(from, "from", "stage:/path=file: a file COPY --from=stage takes (repeatable)")
	fs.Var(labels, "label", "key=value: an image label (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *base == "" || *ref == "" || *out == "" {
		return fmt.Errorf("-base, -ref and -out are required")
	}
	f, err := os.Open(*dockerfile)
	if err != nil {
		return err
	}
	defer f.Close()
	rc, err := parseRecipe(f, *contextDir, from)
	if err != nil {
		return err
	}
	if rc.Base != *baseName {
		return fmt.Errorf("the Dockerfile's final stage is FROM %s, the base layer is %s", rc.Base, *baseName)
	}
	created := time.Unix(*epoch, 0).UTC()
	img, err := buildImage(rc, *base, labels, created)
	if err != nil {
		return err
	}
	if err := writeArchive(img, *ref, *out); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", *out, *ref, d)
	return nil
}
