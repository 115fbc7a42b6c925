// Command vmpod-cloud-init is the tiny cloud-init of the vmpod e2e test guest
// (see ../README.md). /init runs it once at boot, after the kernel modules are
// loaded and before the ready lines. It
//
//   - creates /dev/disk/by-id/virtio-<serial> links for virtio disks
//     (busybox mdev does not), also when run as `vmpod-cloud-init byid`;
//   - looks for an ISO9660 seed labelled "cidata" (NoCloud) or "config-2"
//     (OpenStack ConfigDrive) on sr*, vd* and sd* devices;
//   - applies the meta-data (instance id, hostname, public keys) and the
//     user-data (#cloud-config, shell scripts, boothooks, MIME multipart,
//     #cloud-config-archive) following cloud-init's formats and module order.
//
// It prints its progress on /dev/ttyS0:
//
//	vmpod-test-guest cloud-init none
//	vmpod-test-guest cloud-init datasource=<nocloud|configdrive>
//	vmpod-test-guest cloud-init done
//	vmpod-test-guest cloud-init error: <msg>
//
// Build: CGO_ENABLED=0 go build (static; standard library and sigs.k8s.io/yaml).
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"
)

const (
	ttyPath   = "/dev/ttyS0"
	prefix    = "vmpod-test-guest cloud-init"
	seedMount = "/run/vmpod-seed"
	varLib    = "/var/lib/cloud"
	// How long to wait for a seed device to show up.
	seedWait = 2 * time.Second
)

var console io.Writer = os.Stdout

// ranUserCode is set once a user command or script has written to the console.
var ranUserCode bool

func say(format string, a ...any) {
	fmt.Fprintf(console, format+"\n", a...)
}

// Errors of the modules. The run continues; the final line is
// "cloud-init error: ..." when there was any, else "cloud-init done".
var errs []string

func fail(format string, a ...any) {
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, a...)), " ")
	errs = append(errs, msg)
	fmt.Fprintf(os.Stderr, "vmpod-cloud-init: %s\n", msg)
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "byid":
			makeByID()
			return
		case "watch":
			watchUevents()
			return
		}
	}
	if f, err := os.OpenFile(ttyPath, os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
		console = f
	}
	makeByID()
	os.Exit(run())
}

// earlyDone is created once the init stage (bootcmd, write_files, mounts,
// keys) has run; /init waits for it, or for this program's exit, before it
// starts qemu-ga.
const earlyDone = "/run/vmpod-cloud-init.init-done"

func run() int {
	ds, err := findSeed()
	if err != nil {
		say("%s error: %v", prefix, err)
		writeStatus("error", err.Error())
		return 1
	}
	if ds == nil {
		say("%s none", prefix)
		writeStatus("none", "")
		return 0
	}
	say("%s datasource=%s", prefix, ds.name)
	apply(ds)
	if ranUserCode {
		// User commands write straight to the console; their last line may
		// have no newline. Start the status line on a line of its own.
		say("")
	}
	if len(errs) > 0 {
		msg := strings.Join(errs, "; ")
		say("%s error: %s", prefix, msg)
		writeStatus("error", msg)
		return 1
	}
	say("%s done", prefix)
	writeStatus("done", "")
	return 0
}

func writeStatus(status, msg string) {
	_ = os.MkdirAll("/run/cloud-init", 0o755)
	b, _ := json.Marshal(map[string]any{"status": status, "errors": errs, "message": msg})
	_ = os.WriteFile("/run/cloud-init/status.json", append(b, '\n'), 0o644)
}

// ---------------------------------------------------------------- by-id links

// makeByID creates /dev/disk/by-id/virtio-<serial> (and -partN) symlinks like
// udev's 60-persistent-storage.rules, for every virtio disk with a serial.
func makeByID() {
	dir := "/dev/disk/by-id"
	// Drop links of disks that are gone (hot-unplug).
	old, _ := filepath.Glob(dir + "/virtio-*")
	for _, l := range old {
		if _, err := os.Stat(l); err != nil {
			_ = os.Remove(l)
		}
	}
	disks, _ := filepath.Glob("/sys/block/vd*")
	for _, d := range disks {
		b, err := os.ReadFile(d + "/serial")
		if err != nil {
			continue
		}
		serial := sanitizeSerial(string(b))
		if serial == "" {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return
		}
		name := filepath.Base(d)
		link(dir+"/virtio-"+serial, "../../"+name)
		parts, _ := filepath.Glob(d + "/" + name + "*")
		for _, p := range parts {
			pn, err := os.ReadFile(p + "/partition")
			if err != nil {
				continue
			}
			link(fmt.Sprintf("%s/virtio-%s-part%s", dir, serial, strings.TrimSpace(string(pn))), "../../"+filepath.Base(p))
		}
	}
}

// watchUevents keeps the by-id links up to date for hotplugged virtio disks
// (the kernel has no uevent helper, so listen on the uevent netlink socket).
func watchUevents() {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmpod-cloud-init watch: %v\n", err)
		os.Exit(1)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK, Groups: 1, Pid: 0}); err != nil {
		fmt.Fprintf(os.Stderr, "vmpod-cloud-init watch: %v\n", err)
		os.Exit(1)
	}
	makeByID()
	buf := make([]byte, 64<<10)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			if err == syscall.EINTR || err == syscall.ENOBUFS {
				makeByID()
				continue
			}
			os.Exit(1)
		}
		msg := string(buf[:n])
		if strings.Contains(msg, "\x00SUBSYSTEM=block\x00") && strings.Contains(msg, "\x00DEVNAME=vd") {
			makeByID()
		}
	}
}

func sanitizeSerial(s string) string {
	s = strings.TrimRight(s, "\x00 \n\t")
	s = strings.TrimSpace(s)
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == '/' || r > '~' {
			return '_'
		}
		return r
	}, s)
}

func link(path, target string) {
	if cur, err := os.Readlink(path); err == nil && cur == target {
		return
	}
	_ = os.Remove(path)
	_ = os.Symlink(target, path)
}

// ------------------------------------------------------------------- seeds

type datasource struct {
	name       string // nocloud | configdrive
	dev        string
	instanceID string
	hostname   string
	publicKeys []string
	files      []fileSpec // ConfigDrive meta_data "files"
	userData   []byte
	vendorData []byte
}

// isoLabel returns the volume label of an ISO9660 image on dev.
func isoLabel(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 2048)
	if _, err := f.ReadAt(buf, 32768); err != nil {
		return "", err
	}
	if buf[0] != 1 || string(buf[1:6]) != "CD001" {
		return "", nil
	}
	return strings.TrimRight(string(buf[40:72]), " \x00"), nil
}

// candidates lists the block devices (and partitions of disks) to look at.
func candidates() []string {
	var out []string
	for _, pat := range []string{"sr*", "vd*", "sd*"} {
		ds, _ := filepath.Glob("/sys/block/" + pat)
		for _, d := range ds {
			name := filepath.Base(d)
			out = append(out, name)
			if !strings.HasPrefix(name, "sr") {
				parts, _ := filepath.Glob(d + "/" + name + "*")
				for _, p := range parts {
					out = append(out, filepath.Base(p))
				}
			}
		}
	}
	return out
}

// scsiPending reports whether a SCSI disk/CD-ROM has no block device yet
// (sd probes asynchronously).
func scsiPending() bool {
	devs, _ := filepath.Glob("/sys/bus/scsi/devices/*:*:*:*")
	for _, d := range devs {
		t, err := os.ReadFile(d + "/type")
		if err != nil {
			continue
		}
		switch strings.TrimSpace(string(t)) {
		case "0", "5", "7", "14":
			if _, err := os.Stat(d + "/block"); err != nil {
				return true
			}
		}
	}
	return false
}

// findSeed looks for a device labelled cidata or config-2. /init loads
// scsi_mod with scan=sync, so SCSI devices exist once the modules are loaded;
// it only waits (up to seedWait) while a device is not readable yet or a SCSI
// disk/CD-ROM has no block device yet. With no seed it returns at once.
func findSeed() (*datasource, error) {
	deadline := time.Now().Add(seedWait)
	for {
		unreadable := false
		for _, name := range candidates() {
			label, err := isoLabel("/dev/" + name)
			if err != nil {
				// An empty CD-ROM drive gives ENOMEDIUM and a short disk EOF;
				// anything else may be a device that is not ready yet.
				if !errors.Is(err, syscall.ENOMEDIUM) && !errors.Is(err, io.EOF) &&
					!errors.Is(err, io.ErrUnexpectedEOF) {
					unreadable = true
				}
				continue
			}
			switch strings.ToLower(label) {
			case "cidata":
				return readSeed("nocloud", "/dev/"+name)
			case "config-2":
				return readSeed("configdrive", "/dev/"+name)
			}
		}
		if !unreadable && !scsiPending() {
			return nil, nil
		}
		if time.Now().After(deadline) {
			return nil, nil
		}
		time.Sleep(40 * time.Millisecond)
	}
}

func readSeed(kind, dev string) (*datasource, error) {
	if err := os.MkdirAll(seedMount, 0o755); err != nil {
		return nil, err
	}
	var err error
	for i := 0; i < 20; i++ {
		if err = syscall.Mount(dev, seedMount, "iso9660", syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("mount %s (%s): %v", dev, kind, err)
	}
	defer func() {
		_ = syscall.Unmount(seedMount, 0)
		_ = os.Remove(seedMount)
	}()
	ds := &datasource{name: kind, dev: dev}
	if kind == "nocloud" {
		return ds, readNoCloud(ds)
	}
	return ds, readConfigDrive(ds)
}

func readNoCloud(ds *datasource) error {
	md, err := os.ReadFile(seedMount + "/meta-data")
	if err != nil {
		return fmt.Errorf("nocloud: %v", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(md, &m); err != nil {
		return fmt.Errorf("nocloud meta-data: %v", err)
	}
	ds.instanceID = str(m["instance-id"])
	ds.hostname = str(m["local-hostname"])
	if ds.hostname == "" {
		ds.hostname = str(m["hostname"])
	}
	ds.publicKeys = keyList(m["public-keys"])
	ds.userData, _ = os.ReadFile(seedMount + "/user-data")
	ds.vendorData, _ = os.ReadFile(seedMount + "/vendor-data")
	if ds.instanceID == "" {
		ds.instanceID = "iid-datasource-nocloud"
	}
	return nil
}

func readConfigDrive(ds *datasource) error {
	base := seedMount + "/openstack/latest"
	md, err := os.ReadFile(base + "/meta_data.json")
	if err != nil {
		return fmt.Errorf("configdrive: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(md, &m); err != nil {
		return fmt.Errorf("configdrive meta_data.json: %v", err)
	}
	ds.instanceID = str(m["uuid"])
	ds.hostname = str(m["hostname"])
	if ds.hostname == "" {
		ds.hostname = str(m["name"])
	}
	ds.publicKeys = keyList(m["public_keys"])
	// Injected files: [{"path": "/etc/x", "content_path": "/content/0000"}].
	if fl, ok := m["files"].([]any); ok {
		for _, f := range fl {
			fm, _ := f.(map[string]any)
			p, cp := str(fm["path"]), str(fm["content_path"])
			if p == "" || cp == "" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(seedMount, "openstack", filepath.Clean("/"+cp)))
			if err != nil {
				fail("configdrive file %s: %v", p, err)
				continue
			}
			ds.files = append(ds.files, fileSpec{Path: p, Content: b, Perm: 0o644})
		}
	}
	ds.userData, _ = os.ReadFile(base + "/user_data")
	if vd, err := os.ReadFile(base + "/vendor_data.json"); err == nil {
		// vendor_data.json is JSON: a string, or {"cloud-init": "..."}.
		var v any
		if json.Unmarshal(vd, &v) == nil {
			switch t := v.(type) {
			case string:
				ds.vendorData = []byte(t)
			case map[string]any:
				ds.vendorData = []byte(str(t["cloud-init"]))
			}
		}
	}
	return nil
}

// keyList accepts a string (one key per line), a list, or a map of name->key.
func keyList(v any) []string {
	var out []string
	switch t := v.(type) {
	case string:
		for _, l := range strings.Split(t, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	case []any:
		for _, e := range t {
			out = append(out, keyList(e)...)
		}
	case map[string]any:
		names := make([]string, 0, len(t))
		for k := range t {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			out = append(out, keyList(t[k])...)
		}
	}
	return out
}

func str(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(t)
	default:
		return fmt.Sprint(t)
	}
}

// --------------------------------------------------------------- user-data

type script struct {
	name    string
	content []byte
}

type userData struct {
	config    map[string]any
	scripts   []script // text/x-shellscript: run once, before runcmd
	boothooks []script // text/cloud-boothook: run early, before bootcmd
}

func (u *userData) addConfig(b []byte, what string) {
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		fail("%s: invalid cloud-config: %v", what, err)
		return
	}
	if m == nil {
		return
	}
	if u.config == nil {
		u.config = map[string]any{}
	}
	mergeInto(u.config, m)
}

// mergeInto merges cloud-config parts: maps recursively, lists appended,
// other values replaced by the later part.
func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		old, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		switch nv := v.(type) {
		case map[string]any:
			if om, ok := old.(map[string]any); ok {
				mergeInto(om, nv)
				continue
			}
		case []any:
			if ol, ok := old.([]any); ok {
				dst[k] = append(ol, nv...)
				continue
			}
		}
		dst[k] = v
	}
}

func maybeGunzip(b []byte) []byte {
	if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
		if r, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			if out, err := io.ReadAll(r); err == nil {
				return out
			}
		}
	}
	return b
}

func firstLine(b []byte) string {
	l, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(l)
}

// parsePart handles one piece of user-data; ctype is the MIME type if known.
func (u *userData) parsePart(b []byte, ctype, filename, what string) {
	b = maybeGunzip(b)
	if ctype == "" || ctype == "text/plain" || ctype == "text/x-not-multipart" {
		ctype = guessType(b)
	}
	switch ctype {
	case "text/cloud-config", "text/cloud-config-jsonp":
		u.addConfig(b, what)
	case "text/x-shellscript":
		u.scripts = append(u.scripts, script{name: partName(filename, len(u.scripts)+len(u.boothooks)), content: b})
	case "text/cloud-boothook":
		// The "#cloud-boothook" line is removed; the rest is run as a script.
		body := b
		if strings.HasPrefix(firstLine(b), "#cloud-boothook") {
			_, rest, _ := bytes.Cut(b, []byte("\n"))
			body = rest
		}
		u.boothooks = append(u.boothooks, script{name: partName(filename, len(u.scripts)+len(u.boothooks)), content: body})
	case "multipart/mixed":
		u.parseMIME(b, what)
	case "text/cloud-config-archive":
		u.parseArchive(b, what)
	case "text/plain", "":
		// Plain text that is no known format is ignored, as cloud-init does.
	default:
		fail("%s: unsupported user-data part type %s", what, ctype)
	}
}

func partName(filename string, n int) string {
	if f := filepath.Base(filename); filename != "" && f != "." && f != "/" {
		return f
	}
	return fmt.Sprintf("part-%03d", n+1)
}

func guessType(b []byte) string {
	l := firstLine(b)
	switch {
	case strings.HasPrefix(l, "#cloud-config-archive"):
		return "text/cloud-config-archive"
	case strings.HasPrefix(l, "#cloud-config"):
		return "text/cloud-config"
	case strings.HasPrefix(l, "#!"):
		return "text/x-shellscript"
	case strings.HasPrefix(l, "#cloud-boothook"):
		return "text/cloud-boothook"
	case strings.HasPrefix(l, "#include"):
		return "text/x-include-url"
	case strings.HasPrefix(l, "## template: jinja"):
		return "text/jinja2"
	case strings.HasPrefix(l, "#part-handler"):
		return "text/part-handler"
	}
	lower := strings.ToLower(string(b[:min(len(b), 4096)]))
	if strings.HasPrefix(lower, "content-type:") || strings.HasPrefix(lower, "mime-version:") {
		return "multipart/mixed"
	}
	return "text/plain"
}

func (u *userData) parseMIME(b []byte, what string) {
	msg, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		fail("%s: MIME: %v", what, err)
		return
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		fail("%s: MIME Content-Type: %v", what, err)
		return
	}
	if !strings.HasPrefix(mt, "multipart/") {
		body, err := decodeBody(msg.Body, msg.Header.Get("Content-Transfer-Encoding"))
		if err != nil {
			fail("%s: %v", what, err)
			return
		}
		u.parsePart(body, mt, "", what)
		return
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for i := 1; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return
		}
		if err != nil {
			fail("%s: MIME part %d: %v", what, i, err)
			return
		}
		body, err := decodeBody(p, p.Header.Get("Content-Transfer-Encoding"))
		if err != nil {
			fail("%s: MIME part %d: %v", what, i, err)
			continue
		}
		pt, pparams, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if strings.HasPrefix(pt, "multipart/") {
			// Nested multipart: rebuild a message from the part.
			var nb bytes.Buffer
			fmt.Fprintf(&nb, "Content-Type: %s\r\n\r\n", p.Header.Get("Content-Type"))
			nb.Write(body)
			u.parseMIME(nb.Bytes(), what)
			continue
		}
		fname := p.FileName()
		if fname == "" {
			fname = pparams["name"]
		}
		u.parsePart(body, pt, fname, fmt.Sprintf("%s part %d", what, i))
	}
}

func decodeBody(r io.Reader, cte string) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		raw, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		clean := strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, string(raw))
		return base64.StdEncoding.DecodeString(clean)
	case "quoted-printable":
		// multipart.Reader already decodes it for parts; harmless otherwise.
		return io.ReadAll(quotedprintable.NewReader(r))
	}
	return io.ReadAll(r)
}

// #cloud-config-archive: a YAML list of {type, content, filename} or strings.
func (u *userData) parseArchive(b []byte, what string) {
	var l []any
	if err := yaml.Unmarshal(b, &l); err != nil {
		fail("%s: cloud-config-archive: %v", what, err)
		return
	}
	for i, e := range l {
		w := fmt.Sprintf("%s archive item %d", what, i+1)
		switch t := e.(type) {
		case string:
			u.parsePart([]byte(t), "", "", w)
		case map[string]any:
			u.parsePart([]byte(str(t["content"])), str(t["type"]), str(t["filename"]), w)
		}
	}
}

// ------------------------------------------------------------------- apply

type fileSpec struct {
	Path    string
	Content []byte
	Perm    os.FileMode
	Append  bool
	Defer   bool
}

func apply(ds *datasource) {
	_ = os.MkdirAll(varLib+"/instance/scripts", 0o755)
	_ = os.MkdirAll(varLib+"/data", 0o755)
	_ = os.WriteFile(varLib+"/data/instance-id", []byte(ds.instanceID+"\n"), 0o644)
	_ = os.WriteFile(varLib+"/instance/user-data.txt", ds.userData, 0o600)

	ud := &userData{}
	if len(ds.userData) > 0 {
		ud.parsePart(ds.userData, "", "", "user-data")
	}
	// Vendor-data: the same formats, but user-data wins (merged below it).
	if len(ds.vendorData) > 0 {
		vd := &userData{}
		vd.parsePart(ds.vendorData, "", "", "vendor-data")
		if vd.config != nil {
			if ud.config != nil {
				mergeVendor(vd.config, ud.config)
			}
			ud.config = vd.config
		}
		ud.boothooks = append(vd.boothooks, ud.boothooks...)
		ud.scripts = append(vd.scripts, ud.scripts...)
	}
	cfg := ud.config
	if cfg == nil {
		cfg = map[string]any{}
	}
	env := append(os.Environ(), "HOME=/root", "INSTANCE_ID="+ds.instanceID)

	// Hostname: meta-data, then cloud-config hostname/fqdn (set_hostname).
	setHostname(ds, cfg)

	// cloud_init_modules order: boothooks (user-data processing), bootcmd,
	// write_files, mounts, ssh (authorized keys).
	for _, s := range ud.boothooks {
		runScript(varLib+"/instance/boothooks/"+s.name, s.content, env, "boothook "+s.name, true)
	}
	if v, ok := cfg["bootcmd"]; ok {
		runCommands("bootcmd", v, env)
	}
	files := ds.files
	files = append(files, parseWriteFiles(cfg["write_files"])...)
	writeFiles(files, false)
	doMounts(cfg["mounts"])
	keys := append([]string{}, ds.publicKeys...)
	keys = append(keys, keyList(cfg["ssh_authorized_keys"])...)
	if users, ok := cfg["users"].([]any); ok {
		for _, u := range users {
			if um, ok := u.(map[string]any); ok && str(um["name"]) == "root" {
				keys = append(keys, keyList(um["ssh_authorized_keys"])...)
			}
		}
	}
	writeAuthorizedKeys(keys)
	// The init stage is over: /init starts qemu-ga now, beside the final
	// stage (as a real guest's systemd does), so a runcmd that never ends
	// (a container's workload) does not keep the agent out.
	_ = os.WriteFile(earlyDone, nil, 0o644)
	// cloud_final_modules: write_files (defer: true), then scripts-user runs the
	// user-data scripts and the runcmd script.
	writeFiles(files, true)
	for _, s := range ud.scripts {
		runScript(varLib+"/instance/scripts/"+s.name, s.content, env, "script "+s.name, false)
	}
	if v, ok := cfg["runcmd"]; ok {
		runCommands("runcmd", v, env)
	}
	_ = os.WriteFile(varLib+"/instance/boot-finished", []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

// mergeVendor puts user config over vendor config (user values win).
func mergeVendor(vendor, user map[string]any) {
	for k, v := range user {
		vendor[k] = v
	}
}

func setHostname(ds *datasource, cfg map[string]any) {
	if b, ok := cfg["preserve_hostname"].(bool); ok && b {
		return
	}
	name := ds.hostname
	if h := str(cfg["fqdn"]); h != "" {
		name = h
	}
	if h := str(cfg["hostname"]); h != "" {
		name = h
	}
	// cloud-init sets the short name (the part before the first dot).
	name, _, _ = strings.Cut(strings.TrimSpace(name), ".")
	if name == "" {
		return
	}
	if err := syscall.Sethostname([]byte(name)); err != nil {
		fail("hostname %s: %v", name, err)
		return
	}
	_ = os.WriteFile("/etc/hostname", []byte(name+"\n"), 0o644)
	hosts, _ := os.ReadFile("/etc/hosts")
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(hosts), "\n"), "\n") {
		if !strings.HasPrefix(l, "127.0.1.1") && l != "" {
			out = append(out, l)
		}
	}
	out = append(out, "127.0.1.1\t"+name)
	_ = os.WriteFile("/etc/hosts", []byte(strings.Join(out, "\n")+"\n"), 0o644)
}

// shellQuote quotes one argument for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellify turns bootcmd/runcmd into one sh script, as cloud-init does: a
// string entry is a line of shell, a list entry is a quoted argv.
func shellify(v any) (string, error) {
	l, ok := v.([]any)
	if !ok {
		if s, ok := v.(string); ok {
			return "#!/bin/sh\n" + s + "\n", nil
		}
		return "", fmt.Errorf("must be a list, got %T", v)
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	for i, e := range l {
		switch t := e.(type) {
		case string:
			b.WriteString(t + "\n")
		case []any:
			args := make([]string, len(t))
			for j, a := range t {
				args[j] = shellQuote(str(a))
			}
			b.WriteString(strings.Join(args, " ") + "\n")
		case nil:
		default:
			return "", fmt.Errorf("entry %d: unsupported type %T", i+1, e)
		}
	}
	return b.String(), nil
}

func runCommands(what string, v any, env []string) {
	sh, err := shellify(v)
	if err != nil {
		fail("%s: %v", what, err)
		return
	}
	path := varLib + "/instance/scripts/" + what
	if what == "bootcmd" {
		path = varLib + "/instance/bootcmd"
	}
	runScript(path, []byte(sh), env, what, true)
}

// runScript writes a script and runs it with the console as its output.
// viaShell runs it with /bin/sh (bootcmd, runcmd, boothooks); otherwise it is
// executed directly (user-data scripts: their #! line chooses the interpreter).
func runScript(path string, content []byte, env []string, what string, viaShell bool) {
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, content, 0o700); err != nil {
		fail("%s: %v", what, err)
		return
	}
	var cmd *exec.Cmd
	if viaShell {
		cmd = exec.Command("/bin/sh", path)
	} else {
		cmd = exec.Command(path)
	}
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdin = nil
	cmd.Stdout = console
	cmd.Stderr = console
	ranUserCode = true
	if err := cmd.Run(); err != nil {
		fail("%s: %v", what, err)
	}
}

func parseWriteFiles(v any) []fileSpec {
	l, ok := v.([]any)
	if v == nil {
		return nil
	}
	if !ok {
		fail("write_files: must be a list")
		return nil
	}
	var out []fileSpec
	for i, e := range l {
		m, ok := e.(map[string]any)
		if !ok || str(m["path"]) == "" {
			fail("write_files entry %d: no path", i+1)
			continue
		}
		p := str(m["path"])
		content, err := decodeContent(str(m["content"]), strings.ToLower(str(m["encoding"])))
		if err != nil {
			fail("write_files %s: %v", p, err)
			continue
		}
		perm := os.FileMode(0o644)
		switch t := m["permissions"].(type) {
		case string:
			s := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(t), "0o"), "0O")
			n, err := strconv.ParseUint(s, 8, 32)
			if err != nil {
				fail("write_files %s: bad permissions %q", p, t)
			} else {
				perm = os.FileMode(n)
			}
		case float64: // YAML 1.1: unquoted 0644 is already octal
			perm = os.FileMode(int(t))
		}
		out = append(out, fileSpec{
			Path: p, Content: content, Perm: perm,
			Append: truthy(m["append"]), Defer: truthy(m["defer"]),
		})
	}
	return out
}

func truthy(v any) bool {
	switch t := v.(type) {
	case bool:
		return t
	case string:
		switch strings.ToLower(t) {
		case "true", "yes", "on", "1":
			return true
		}
	}
	return false
}

func decodeContent(s, enc string) ([]byte, error) {
	gz, b64 := false, false
	switch enc {
	case "", "text/plain":
	case "b64", "base64":
		b64 = true
	case "gz", "gzip":
		gz = true
	case "gz+b64", "gzip+b64", "gz+base64", "gzip+base64":
		gz, b64 = true, true
	default:
		return nil, fmt.Errorf("unknown encoding %q", enc)
	}
	b := []byte(s)
	if b64 {
		d, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, fmt.Errorf("base64: %v", err)
		}
		b = d
	}
	if gz {
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip: %v", err)
		}
		if b, err = io.ReadAll(r); err != nil {
			return nil, fmt.Errorf("gzip: %v", err)
		}
	}
	return b, nil
}

func writeFiles(files []fileSpec, deferred bool) {
	for _, f := range files {
		if f.Defer != deferred {
			continue
		}
		p := filepath.Clean("/" + f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			fail("write_files %s: %v", p, err)
			continue
		}
		flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		if f.Append {
			flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
		}
		fh, err := os.OpenFile(p, flags, f.Perm)
		if err == nil {
			_, err = fh.Write(f.Content)
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			err = os.Chmod(p, f.Perm)
		}
		if err != nil {
			fail("write_files %s: %v", p, err)
		}
	}
}

func writeAuthorizedKeys(keys []string) {
	if len(keys) == 0 {
		return
	}
	dir := "/root/.ssh"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fail("ssh_authorized_keys: %v", err)
		return
	}
	_ = os.Chmod(dir, 0o700)
	path := dir + "/authorized_keys"
	old, _ := os.ReadFile(path)
	seen := map[string]bool{}
	var lines []string
	for _, l := range strings.Split(string(old), "\n") {
		if l = strings.TrimSpace(l); l != "" && !seen[l] {
			seen[l] = true
			lines = append(lines, l)
		}
	}
	for _, k := range keys {
		if k = strings.TrimSpace(k); k != "" && !seen[k] {
			seen[k] = true
			lines = append(lines, k)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		fail("ssh_authorized_keys: %v", err)
		return
	}
	_ = os.Chmod(path, 0o600)
}

// ------------------------------------------------------------------ mounts

var loaded = map[string]bool{}

func modprobe(mods ...string) {
	for _, m := range mods {
		if !loaded[m] {
			loaded[m] = true
			_ = exec.Command("/sbin/modprobe", m).Run()
		}
	}
}

// doMounts implements cc_mounts: entries [fs_spec, fs_file, fs_vfstype,
// fs_mntops, fs_freq, fs_passno], defaults as cloud-init's
// mount_default_fields; lines go to /etc/fstab and are mounted.
func doMounts(v any) {
	if v == nil {
		return
	}
	l, ok := v.([]any)
	if !ok {
		fail("mounts: must be a list")
		return
	}
	defaults := []string{"", "", "auto", "defaults,nofail", "0", "2"}
	var fstab strings.Builder
	for i, e := range l {
		el, ok := e.([]any)
		if !ok || len(el) < 2 {
			fail("mounts entry %d: need at least [source, target]", i+1)
			continue
		}
		f := append([]string{}, defaults...)
		for j := 0; j < len(el) && j < 6; j++ {
			if el[j] != nil {
				f[j] = str(el[j])
			}
		}
		src, target, fstype, opts := f[0], f[1], f[2], f[3]
		if target == "" || target == "none" || src == "" {
			continue // cloud-init: an entry without a mount point removes it
		}
		if strings.HasPrefix(src, "swap") || fstype == "swap" {
			fail("mounts entry %d: swap is not supported", i+1)
			continue
		}
		network := map[string]bool{"virtiofs": true, "9p": true, "tmpfs": true, "nfs": true, "nfs4": true, "cifs": true, "proc": true, "sysfs": true}[fstype]
		if !network && !strings.HasPrefix(src, "/") && !strings.ContainsAny(src, "=:") {
			src = "/dev/" + src
		}
		// Options for mount(8): drop what only systemd / fstab understand.
		var mo []string
		for _, o := range strings.Split(opts, ",") {
			switch {
			case o == "", o == "defaults", o == "nofail", o == "auto", o == "noauto",
				strings.HasPrefix(o, "x-systemd."), strings.HasPrefix(o, "comment="), o == "_netdev":
			default:
				mo = append(mo, o)
			}
		}
		switch fstype {
		case "virtiofs":
			modprobe("fuse", "virtiofs")
		case "9p":
			modprobe("9pnet", "9pnet_virtio", "9p")
			has := strings.Join(mo, ",")
			if !strings.Contains(has, "trans=") {
				mo = append([]string{"trans=virtio"}, mo...)
			}
			if !strings.Contains(has, "version=") {
				mo = append(mo, "version=9p2000.L")
			}
		}
		fmt.Fprintf(&fstab, "%s\t%s\t%s\t%s,comment=cloudconfig\t%s\t%s\n", src, target, fstype, opts, f[4], f[5])
		if fstype != "auto" && fstype != "" && !haveFS(fstype) {
			fail("mounts %s: filesystem %s is not available in this kernel", target, fstype)
			continue
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			fail("mounts %s: %v", target, err)
			continue
		}
		args := []string{}
		if fstype != "auto" && fstype != "" {
			args = append(args, "-t", fstype)
		}
		if len(mo) > 0 {
			args = append(args, "-o", strings.Join(mo, ","))
		}
		args = append(args, src, target)
		out, err := exec.Command("/bin/mount", args...).CombinedOutput()
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if msg == "" {
				msg = err.Error()
			}
			fail("mount %s: %s", strings.Join(args, " "), msg)
		}
	}
	if fstab.Len() > 0 {
		if fh, err := os.OpenFile("/etc/fstab", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			_, _ = fh.WriteString(fstab.String())
			_ = fh.Close()
		}
	}
}

// haveFS reports whether the kernel knows the filesystem type (after modprobe).
func haveFS(fstype string) bool {
	b, _ := os.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	return false
}
