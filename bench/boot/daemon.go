package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/bench/internal/measure"
	"github.com/vmpod/vmpod/internal/testdaemon"
	"libvirt.org/go/libvirt"
)

// imageName is the name the translation rule maps to the served guest.
const imageName = "vmpodbench-guest"

// The pods' network (measure.BridgeCNI): only on this machine.
const (
	benchBridge = "vmpodboot0"
	benchSubnet = "10.249.0.0/16"
)

// bench is one benchmark run: its files, the vmpod it started, the
// client, and everything to clean up.
type bench struct {
	opts options
	tag  string // random, in this run's pod and baseline domain names

	work      string // everything lives below (removed at the end)
	socket    string
	stateDir  string
	transDir  string
	cniConf   string // VMPOD_CNI_CONF_DIR: a private bridge network
	cniClean  func() // removes the bridge
	podLogDir string
	directDir string
	vmpodLog  string

	srv        *http.Server
	lv         *libvirt.Connect // the baseline's
	bridgeMade bool
	aborted    bool // guarded by mu
	vmpod      *testdaemon.Daemon
	conn       *grpc.ClientConn
	rt         runtimeapi.RuntimeServiceClient
	img        runtimeapi.ImageServiceClient
	imgPath    string // the pulled image file in vmpod's store

	mu             sync.Mutex
	vmpodDomains   map[string]bool // domains of our pods, to verify and, failing that, clean up
	directDomains  map[string]bool // baseline domains currently running
	cleanupOnce    sync.Once
	problems       []string
	foreignAtStart []string
	logLines       []string // vmpod's WARN/ERROR lines, read before the log is removed
}

func (b *bench) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// fatalf cleans up and exits.
func (b *bench) fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "boot bench: "+format+"\n", args...)
	b.abort(1)
}

// abort cleans up, reports the problems seen and exits with code.
func (b *bench) abort(code int) {
	b.mu.Lock()
	b.aborted = true // no baseline domain is defined from now on
	b.mu.Unlock()
	b.cleanup()
	b.mu.Lock()
	for _, p := range b.problems {
		fmt.Fprintln(os.Stderr, "  - "+p)
	}
	b.mu.Unlock()
	os.Exit(code)
}

// setup makes the work directory (open to QEMU, which runs as
// libvirt-qemu and must read the disks below it) and serves the guest.
func (b *bench) setup() {
	dir, err := os.MkdirTemp("", "vmpodbench-")
	if err != nil {
		b.fatalf("%v", err)
	}
	b.work = dir
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	// Short: per-VM serial sockets live beside the CRI socket and unix
	// socket paths are limited to 107 bytes.
	b.socket = filepath.Join(dir, "run", "v.sock")
	b.stateDir = filepath.Join(dir, "state")
	b.transDir = filepath.Join(dir, "images.d")
	b.podLogDir = filepath.Join(dir, "pods")
	b.directDir = filepath.Join(dir, "direct")
	b.vmpodLog = filepath.Join(dir, "vmpod.log")
	for _, d := range []string{filepath.Dir(b.socket), b.stateDir, b.transDir, b.podLogDir, b.directDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.fatalf("%v", err)
		}
	}

	// RunPodSandbox needs a pod network: a bridge of this run's own on a
	// subnet that exists only on this machine.
	if b.cniConf, b.cniClean, err = measure.BridgeCNI(dir, benchBridge, benchBridge, benchSubnet); err != nil {
		b.fatalf("CNI config: %v", err)
	}

	// The baseline's own libvirt connection and bridge.
	if b.lv, err = libvirt.NewConnect(b.opts.uri); err != nil {
		b.fatalf("libvirt: %v", err)
	}
	if err := b.makeBridge(); err != nil {
		b.fatalf("%v", err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.fatalf("%v", err)
	}
	guest := b.opts.guest
	mux := http.NewServeMux()
	mux.HandleFunc("/"+filepath.Base(guest), func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, guest) })
	b.srv = &http.Server{Handler: mux}
	go b.srv.Serve(lis)
	url := "http://" + lis.Addr().String() + "/" + filepath.Base(guest)
	rule := fmt.Sprintf("[[translations]]\nname = %q\nurl = %q\n", imageName, url)
	if err := os.WriteFile(filepath.Join(b.transDir, "bench.toml"), []byte(rule), 0o644); err != nil {
		b.fatalf("%v", err)
	}
}

// waitNoForeignVmpodDomains waits (up to -foreign-wait, 0 by default)
// until libvirt has no vmpod-* domain. A vmpod starting on a fresh state
// directory removes only the unrecorded domains of its own instance
// (pkg/lifecycle/recovery.go), so others' vmpods' domains are safe and
// the wait is only for a quieter machine.
func (b *bench) waitNoForeignVmpodDomains() {
	deadline := time.Now().Add(b.opts.foreignWait)
	first := true
	for {
		names, err := b.virshNames()
		if err != nil {
			b.fatalf("virsh list: %v", err)
		}
		var foreign []string
		for _, n := range names {
			if strings.HasPrefix(n, "vmpod-") {
				foreign = append(foreign, n)
			}
		}
		if len(foreign) == 0 {
			return
		}
		if first {
			b.foreignAtStart = foreign
			fmt.Printf("waiting up to %v: libvirt has %d vmpod-* domain(s) of someone else (%s)\n",
				b.opts.foreignWait, len(foreign), strings.Join(foreign, ", "))
			first = false
		}
		if time.Now().After(deadline) {
			fmt.Printf("starting anyway: other vmpod instances' domains are left alone by vmpod's recovery\n")
			return
		}
		time.Sleep(2 * time.Second)
	}
}

// startVmpod starts `vmpod serve` and connects the CRI client.
func (b *bench) startVmpod() {
	env := []string{"VMPOD_ACCELERATOR=tcg", "VMPOD_IMAGE_TRANSLATIONS_DIR=" + b.transDir, "VMPOD_CNI_CONF_DIR=" + b.cniConf}
	if b.opts.tbCacheMiB > 0 {
		env = append(env, fmt.Sprintf("VMPOD_TCG_TB_CACHE_MIB=%d", b.opts.tbCacheMiB))
	}
	b.vmpod = testdaemon.New(testdaemon.Options{Bin: b.opts.vmpod, Socket: b.socket, StateDir: b.stateDir, LogPath: b.vmpodLog,
		LogLevel: b.opts.logLevel, Args: []string{"--libvirt-uri", b.opts.uri}, Env: env})
	if err := b.vmpod.Start(); err != nil {
		b.fatalf("%v", err)
	}
	var err error
	b.conn, err = grpc.NewClient("unix://"+b.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.fatalf("grpc client: %v", err)
	}
	b.rt = runtimeapi.NewRuntimeServiceClient(b.conn)
	b.img = runtimeapi.NewImageServiceClient(b.conn)
}

// pull pulls the guest through vmpod and finds its file in the store.
func (b *bench) pull() time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := b.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: imageName}}); err != nil {
		b.fatalf("pull %s: %v\n%s", imageName, err, b.vmpod.LogTail(30))
	}
	d := time.Since(start)
	st, err := b.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: imageName}, Verbose: true})
	if err != nil {
		b.fatalf("image status: %v", err)
	}
	var info struct{ Path, Format string }
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil || info.Path == "" {
		b.fatalf("image status verbose info has no path: %q (%v)", st.GetInfo()["info"], err)
	}
	if info.Format != "qcow2" {
		b.fatalf("pulled image format is %q, the baseline assumes qcow2", info.Format)
	}
	b.imgPath = info.Path
	return d
}

// vmpodAlive reports whether the vmpod process still runs.
func (b *bench) vmpodAlive() bool { return b.vmpod != nil && b.vmpod.Running() }

// virsh runs virsh on the benchmark's libvirt URI.
func (b *bench) virsh(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-q", "-c", b.opts.uri}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// virshNames lists every domain, running or not.
func (b *bench) virshNames() ([]string, error) {
	out, err := b.virsh("list", "--all", "--name")
	return strings.Fields(out), err
}

// cleanup removes everything the benchmark started: pods (and their
// domains) through vmpod, then by virsh whatever of ours is left, the
// baseline domains, vmpod itself, the HTTP server and the files. It only
// ever touches domains this run created.
func (b *bench) cleanup() {
	b.cleanupOnce.Do(func() {
		if b.rt != nil && b.vmpodAlive() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if l, err := b.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
				for _, p := range l.GetItems() {
					if _, _, err := b.removePod(p.GetId()); err != nil {
						fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
					}
				}
			}
			cancel()
		}
		if b.vmpod != nil {
			if err := b.vmpod.Stop(); err != nil {
				b.problem("%v", err)
			}
		}
		// What vmpod did not remove (a pod created while cleaning up, or a
		// vmpod that failed): ours by name, or by our tag in the pod UID
		// that vmpod writes into its domain metadata.
		if names, err := b.virshNames(); err == nil {
			for _, n := range names {
				b.mu.Lock()
				ours := b.vmpodDomains[n] || b.directDomains[n] || strings.HasPrefix(n, "vmpodbench-"+b.tag+"-")
				b.mu.Unlock()
				if !ours && strings.HasPrefix(n, "vmpod-") {
					x, err := b.virsh("dumpxml", "--inactive", n)
					ours = err == nil && strings.Contains(x, `uid="uid-`+b.tag+`-`)
				}
				if ours {
					b.problem("cleanup: domain %s was left; destroyed and undefined it with virsh", n)
					b.virsh("destroy", n)
					b.virsh("undefine", "--nvram", n)
				}
			}
		}
		b.logLines = b.logProblems()
		if b.conn != nil {
			b.conn.Close()
		}
		if b.srv != nil {
			b.srv.Close()
		}
		if b.cniClean != nil {
			b.cniClean()
		}
		b.removeBridge()
		if b.lv != nil {
			b.lv.Close()
		}
		if b.work != "" {
			if b.opts.keep {
				fmt.Printf("kept %s (vmpod log: %s)\n", b.work, b.vmpodLog)
			} else {
				os.RemoveAll(b.work)
			}
		}
	})
}

// logProblems returns vmpod's WARN and ERROR log lines.
func (b *bench) logProblems() []string {
	f, err := os.Open(b.vmpodLog)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") ||
			strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) || strings.HasPrefix(l, "panic") {
			out = append(out, l)
		}
	}
	return out
}
