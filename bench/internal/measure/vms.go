package measure

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BridgeCNI writes a CNI config dir under work for Debian's bridge +
// host-local + portmap plugins on a private bridge and subnet; the returned
// function deletes the bridge.
func BridgeCNI(work, netName, bridge, subnet string) (confDir string, cleanup func(), err error) {
	confDir = filepath.Join(work, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0", "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`, netName, bridge, filepath.Join(work, "ipam"), subnet)
	if err := os.WriteFile(filepath.Join(confDir, "10-bench.conflist"), []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	return confDir, func() { exec.Command("ip", "link", "del", bridge).Run() }, nil
}

// Guest is a vmpod with the test guest pulled, and CRI clients to it.
type Guest struct {
	RT      runtimeapi.RuntimeServiceClient
	Image   runtimeapi.ImageServiceClient
	ImageID string
	conn    *grpc.ClientConn
	srv     *httptest.Server
}

// PullGuest serves the guest image over HTTP on 127.0.0.1, adds a "guest"
// translation rule to v (started with VMPOD_IMAGE_TRANSLATIONS_DIR=
// {dir}/images.d) and pulls it.
func PullGuest(v *Vmpod, guest string) (*Guest, error) {
	www := filepath.Join(v.Dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return nil, err
	}
	if err := exec.Command("cp", guest, filepath.Join(www, "guest.qcow2")).Run(); err != nil {
		return nil, fmt.Errorf("copy guest: %w", err)
	}
	g := &Guest{srv: httptest.NewServer(http.FileServer(http.Dir(www)))}
	if err := os.MkdirAll(filepath.Join(v.Dir, "images.d"), 0o755); err != nil {
		return nil, err
	}
	rule := fmt.Sprintf("[[translations]]\nname = \"guest\"\nurl = \"%s/guest.qcow2\"\n", g.srv.URL)
	if err := os.WriteFile(filepath.Join(v.Dir, "images.d", "guest.toml"), []byte(rule), 0o644); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+v.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	g.conn, g.RT, g.Image = conn, runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	for i := 0; ; i++ { // vmpod picks the rule up shortly
		r, err := g.Image.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "guest"}})
		if err == nil {
			g.ImageID = r.ImageRef
			return g, nil
		}
		if i > 50 {
			g.Close()
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Close closes the clients and the HTTP server.
func (g *Guest) Close() {
	g.conn.Close()
	g.srv.Close()
}
