package cloudinit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/ssh"
)

func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files under testdata/")
	}
}

// updating reports whether -update was given (the flag may be registered
// by another test helper of the binary).
func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// testKey is a deterministic ed25519 public key in authorized_keys format.
func testKey(t testing.TB, n byte, comment string) string {
	t.Helper()
	seed := bytes.Repeat([]byte{n}, ed25519.SeedSize)
	pub, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(seed).Public())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " " + comment
}

// render lays out a seed as one reviewable text: label, then each file.
func render(s Seed) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "### label: %s\n", s.Label)
	for _, name := range slices.Sorted(maps.Keys(s.Files)) {
		fmt.Fprintf(&b, "### file: %s\n%s", name, s.Files[name])
		if c := s.Files[name]; len(c) > 0 && c[len(c)-1] != '\n' {
			b.WriteString("\n### (no newline at end of file)\n")
		}
	}
	return b.Bytes()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if updating() {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("seed differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// fullInput has every caller-supplied part.
func fullInput(t testing.TB) Input {
	return Input{
		InstanceID: "pod-3f1c7a52-8a8e-4c1e-9a51-0b6d5e2f9c11",
		Hostname:   "web-0",
		Env: [][2]string{
			{"GREETING", `say "hi" to $USER`},
			{"PATH_EXTRA", `C:\tmp`},
			{"EMPTY", ""},
		},
		Files: []File{
			{Path: "/etc/app/config.yaml", Content: []byte("port: 8080\n"), Mode: 0o640},
			{Path: "/run/secrets/token", Content: []byte("s3cr3t"), Mode: 0o600},
			{Path: "/usr/local/bin/helper", Content: []byte("#!/bin/sh\necho hi\n"), Mode: 0o755 | os.ModeSetuid},
			{Path: "/etc/motd", Content: []byte("hello\n")},
		},
		Shares: []Share{
			{Tag: "vol-data", MountPath: "/data", Type: "virtiofs"},
			{Tag: "vol-config", MountPath: "/etc/config", ReadOnly: true, Type: "9p"},
		},
		Devices: []Device{{Serial: "vmpod-blk-1", Path: "/dev/xvdb"}, {Serial: "vol2", Path: "/mnt/raw/disk"}},
		NICs: []NIC{
			{
				MAC:       "52:54:00:12:34:56",
				Addresses: []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16"), netip.MustParsePrefix("fd00:88::5/64")},
				Gateway4:  netip.MustParseAddr("10.88.0.1"),
				Gateway6:  netip.MustParseAddr("fd00:88::1"),
				Routes:    []Route{{To: netip.MustParsePrefix("192.168.0.0/24"), Via: netip.MustParseAddr("10.88.0.254"), Metric: 100}},
				MTU:       1450,
			},
			{Name: "data0", MAC: "52:54:00:AB:CD:EF"},
		},
		DNS: &DNS{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5", "edns0"}},
	}
}

const userCloudConfig = `#cloud-config
# the user's own config
packages: [nginx]
runcmd:
  - [systemctl, enable, --now, nginx]
write_files:
  - path: /etc/nginx/conf.d/site.conf
    content: |
      server { listen 80; }
ssh_authorized_keys:
mounts: [[/dev/vdc, /srv, auto, "defaults", "0", "2"]]
manage_resolv_conf: false
`

const userScript = "#!/bin/sh\necho 'user script ran' > /run/user-script\n"

const userMultipart = `Content-Type: multipart/mixed; boundary="===abc==="
MIME-Version: 1.0

--===abc===
Content-Type: text/cloud-config; charset="us-ascii"

#cloud-config
runcmd:
  - [echo, from-user-part]

--===abc===
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/sh
echo user-multipart-script
--===abc===--
`

func TestBuildGolden(t *testing.T) {
	key1, key2 := testKey(t, 1, "alice@example"), testKey(t, 2, "bob@example")
	sshKeys := "# team keys\n" + key1 + "\n\n" + key2 + "\n"
	base := func(ds string) Input {
		return Input{Datasource: ds, InstanceID: "pod-3f1c7a52-8a8e-4c1e-9a51-0b6d5e2f9c11", Hostname: "web-0"}
	}
	full := func(ds string) Input {
		in := fullInput(t)
		in.Datasource = ds
		return in
	}
	keys := func(in Input) Input {
		k, err := ParseSSHKeys(sshKeys)
		if err != nil {
			t.Fatal(err)
		}
		in.SSHKeys = k
		return in
	}
	meta := func(in Input, v string) Input {
		m, err := ParseMetaData(v)
		if err != nil {
			t.Fatal(err)
		}
		in.MetaData = m
		return in
	}
	net := func(in Input, v string) Input { in.NetworkConfig = v; return in }
	ud := func(in Input, v string) Input { in.UserData = v; return in }
	tests := []struct {
		name string
		in   Input
	}{
		{"nocloud-minimal", base("")},
		{"nocloud-full", full("")},
		{"nocloud-ssh-keys", keys(base(""))},
		{"nocloud-meta-data", meta(base(""), "availability-zone: zone-a\nlocal-hostname: override\ntags: {team: web}\n")},
		{"nocloud-network-config", net(full(""), "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")},
		{"nocloud-user-cloud-config", ud(base(""), userCloudConfig)},
		{"nocloud-user-cloud-config-merged", keys(ud(full(""), userCloudConfig))},
		{"nocloud-user-script", ud(base(""), userScript)},
		{"nocloud-user-script-wrapped", ud(full(""), userScript)},
		{"nocloud-user-script-non-ascii-wrapped", ud(full(""), "#!/bin/sh\necho 'grüße' > /run/greeting\n")},
		{"nocloud-user-multipart-wrapped", keys(ud(full(""), userMultipart))},
		{"nocloud-dns-no-nics", func() Input {
			in := base("")
			in.DNS = &DNS{Servers: []string{"10.96.0.10", "fd00::a"}, Searches: []string{"svc.cluster.local"}}
			return in
		}()},
		{"configdrive-minimal", base(DatasourceConfigDrive)},
		{"configdrive-full", full(DatasourceConfigDrive)},
		{"configdrive-ssh-keys", keys(base(DatasourceConfigDrive))},
		{"configdrive-meta-data", meta(base(DatasourceConfigDrive), "availability_zone: nova\nlaunch_index: 0\nmeta: {role: web}\n")},
		{"configdrive-network-config", net(base(DatasourceConfigDrive), `{"links":[],"networks":[],"services":[]}`)},
		{"configdrive-user-cloud-config-merged", keys(ud(full(DatasourceConfigDrive), userCloudConfig))},
		{"configdrive-user-script-wrapped", ud(full(DatasourceConfigDrive), userScript)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seed, err := Build(tt.in)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			got := render(seed)
			golden(t, tt.name, got)
			again, err := Build(tt.in)
			if err != nil || !bytes.Equal(render(again), got) {
				t.Errorf("Build is not deterministic (err %v)", err)
			}
		})
	}
}

// TestMergeKeepsUserEntries checks the merge semantics beyond the golden
// text: user entries first, vmpod's appended, user-only keys kept.
func TestMergeKeepsUserEntries(t *testing.T) {
	in := fullInput(t)
	in.UserData = userCloudConfig
	seed, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	ud := string(seed.Files["user-data"])
	if !strings.HasPrefix(ud, "#cloud-config\n") {
		t.Errorf("user-data does not start with #cloud-config:\n%s", ud)
	}
	for _, want := range []string{"packages:", "nginx", "# the user's own config", "/etc/nginx/conf.d/site.conf", "/etc/app/config.yaml", "manage_resolv_conf: false", "/dev/vdc", "vol-data"} {
		if !strings.Contains(ud, want) {
			t.Errorf("merged user-data lacks %q:\n%s", want, ud)
		}
	}
	if i, j := strings.Index(ud, "systemctl"), strings.Index(ud, "vmpod-share-check"); i < 0 || j < 0 || i > j {
		t.Errorf("user's runcmd must come before vmpod's:\n%s", ud)
	}
	if strings.Count(ud, "manage_resolv_conf") != 1 {
		t.Errorf("user's manage_resolv_conf must win, not be duplicated:\n%s", ud)
	}
}

func TestUserInputChecks(t *testing.T) {
	good := testKey(t, 1, "ok")
	tests := []struct {
		name  string
		check func() error
		want  []string // substrings of the error; nil = valid
	}{
		{"user-data cloud-config", func() error { return CheckUserData("#cloud-config\nruncmd: [[ls]]\n") }, nil},
		{"meta-data", func() error { _, err := ParseMetaData("a: b\n"); return err }, nil},
		{"network config", func() error { return CheckNetworkConfig(DatasourceNoCloud, "version: 2\n") }, nil},
		{"keys", func() error { _, err := ParseSSHKeys("# c\n\n" + good + "\n"); return err }, nil},
		{"datasource", func() error { _, err := ParseDatasource("nocloud"); return err }, nil},
		{"configdrive json network", func() error { return CheckNetworkConfig(DatasourceConfigDrive, `{"links": []}`) }, nil},
		{"bad datasource", func() error { _, err := ParseDatasource("ec2"); return err }, []string{`"ec2"`, "nocloud, configdrive"}},
		{"bad key", func() error { _, err := ParseSSHKeys("# c\n" + good + "\nssh-rsa AAAAnotbase64!!\n"); return err }, []string{"line 3"}},
		{"malformed meta-data", func() error { _, err := ParseMetaData("a: [b\n"); return err }, []string{"meta-data", "not valid YAML"}},
		{"meta-data not a map", func() error { _, err := ParseMetaData("- a\n- b\n"); return err }, []string{"meta-data", "YAML map"}},
		{"malformed network-config", func() error { return CheckNetworkConfig(DatasourceNoCloud, "version: [2\n") }, []string{"network config", "YAML"}},
		{"network-config not JSON for configdrive", func() error { return CheckNetworkConfig(DatasourceConfigDrive, "version: 2\n") }, []string{"network config", "JSON"}},
		{"malformed cloud-config", func() error { return CheckUserData("#cloud-config\nruncmd: [ls\n") }, []string{"user-data", "not valid YAML"}},
		{"cloud-config not a map", func() error { return CheckUserData("#cloud-config\n- a\n") }, []string{"user-data", "YAML map"}},
		{"cloud-config runcmd not a list", func() error { return CheckUserData("#cloud-config\nruncmd: ls\n") }, []string{`"runcmd"`, "must be a list"}},
		{"unknown user-data kind", func() error { return CheckUserData("just text") }, []string{"#cloud-config", "#!", "multipart"}},
		// Found by FuzzBuild: a header line without a colon was nested whole
		// into vmpod's multipart and broke it.
		{"multipart with a malformed header", func() error {
			return CheckUserData("Content-Type: multipart/mixed; boundary=\"b\"\nno colon here\n\n--b\n\nx\n--b--\n")
		}, []string{"user-data", "header block is malformed"}},
		{"oversized user-data", func() error {
			return CheckUserData("#!/bin/sh\n" + strings.Repeat("#", MaxUserDataBytes+1-len("#!/bin/sh\n")))
		}, []string{"65537 bytes", "65536"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	// Build refuses what the checks refuse.
	for _, in := range []Input{
		{InstanceID: "i", UserData: "just text"},
		{InstanceID: "i", Datasource: DatasourceConfigDrive, NetworkConfig: "version: 2\n"},
	} {
		if _, err := Build(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Build(%+v): got %v, want InvalidArgument", in, err)
		}
	}
}

func TestBuildInvalidInput(t *testing.T) {
	okUD := "#!/bin/sh\n" + strings.Repeat("#", MaxUserDataBytes-100)
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"explicit datasource", Input{InstanceID: "i", Datasource: "azure"}, "configdrive"},
		{"no instance id", Input{}, "instance ID"},
		{"env newline", Input{InstanceID: "i", Env: [][2]string{{"A", "x\ny"}}}, "newline"},
		{"env name", Input{InstanceID: "i", Env: [][2]string{{"A=B", "x"}}}, `"A=B"`},
		{"relative file", Input{InstanceID: "i", Files: []File{{Path: "etc/x"}}}, "not absolute"},
		{"share type", Input{InstanceID: "i", Shares: []Share{{Tag: "t", MountPath: "/m", Type: "nfs"}}}, "virtiofs, 9p"},
		{"long serial", Input{InstanceID: "i", Devices: []Device{{Serial: strings.Repeat("s", 21), Path: "/dev/x"}}}, "20 characters"},
		{"bad MAC", Input{InstanceID: "i", NICs: []NIC{{MAC: "zz"}}}, "MAC"},
		{"bad DNS", Input{InstanceID: "i", DNS: &DNS{Servers: []string{"dns.example"}}}, "DNS server"},
		{"oversized after merge", Input{InstanceID: "i", Env: [][2]string{{"K", strings.Repeat("v", 200)}},
			UserData: okUD}, "bytes with vmpod's additions merged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.in)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
	// The limit is on the merged user-data: 64 KiB exactly passes without additions.
	exact := "#!/bin/sh\n" + strings.Repeat("#", MaxUserDataBytes-len("#!/bin/sh\n"))
	if _, err := Build(Input{InstanceID: "i", UserData: exact}); err != nil {
		t.Errorf("64 KiB user-data refused: %v", err)
	}
}

func TestQuoteEnv(t *testing.T) {
	for in, want := range map[string]string{
		``:           `""`,
		`plain`:      `"plain"`,
		`a "b" c`:    `"a \"b\" c"`,
		`$HOME`:      `"\$HOME"`,
		"`id`":       "\"\\`id\\`\"",
		`back\slash`: `"back\\slash"`,
	} {
		if got := quoteEnv(in); got != want {
			t.Errorf("quoteEnv(%q) = %s, want %s", in, got, want)
		}
	}
	// A POSIX shell reads the value back unchanged.
	if sh, err := exec.LookPath("sh"); err == nil {
		val := "a \"q\" $HOME `id` \\ 'single' ü"
		out, err := exec.Command(sh, "-c", "X="+quoteEnv(val)+"; printf %s \"$X\"").Output()
		if err != nil || string(out) != val {
			t.Errorf("shell read %q (err %v), want %q", out, err, val)
		}
	}
}

func TestWriteISO(t *testing.T) {
	if _, err := exec.LookPath(genisoimage); err != nil {
		t.Skip("genisoimage not installed (Debian package genisoimage; hack/install-deps.sh installs it)")
	}
	for _, ds := range []string{DatasourceNoCloud, DatasourceConfigDrive} {
		t.Run(ds, func(t *testing.T) {
			in := fullInput(t)
			in.Datasource = ds
			seed, err := Build(in)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "seed.iso")
			if err := WriteISO(context.Background(), seed, path); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			// The seed carries secrets: root's alone (libvirt lends it to
			// QEMU while the VM runs).
			if st.Mode().Perm() != 0o600 {
				t.Errorf("ISO mode %v, want 0600", st.Mode().Perm())
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			pvd := make([]byte, 2048)
			if _, err := f.ReadAt(pvd, 16*2048); err != nil {
				t.Fatal(err)
			}
			if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
				t.Fatalf("no primary volume descriptor at 32768: % x", pvd[:8])
			}
			if label := strings.TrimRight(string(pvd[40:72]), " "); label != seed.Label {
				t.Errorf("volume label %q, want %q", label, seed.Label)
			}
			if _, err := exec.LookPath("isoinfo"); err != nil {
				t.Skip("isoinfo not installed")
			}
			out, err := exec.Command("isoinfo", "-R", "-f", "-i", path).CombinedOutput()
			if err != nil {
				t.Fatalf("isoinfo -f: %v: %s", err, out)
			}
			for name, content := range seed.Files {
				if !slices.Contains(strings.Split(string(out), "\n"), "/"+name) {
					t.Errorf("isoinfo does not list /%s:\n%s", name, out)
				}
				got, err := exec.Command("isoinfo", "-R", "-i", path, "-x", "/"+name).Output()
				if err != nil || !bytes.Equal(got, content) {
					t.Errorf("/%s in the ISO differs from the seed (err %v)", name, err)
				}
			}
			// Rewriting replaces the file.
			if err := WriteISO(context.Background(), seed, path); err != nil {
				t.Fatalf("rewrite: %v", err)
			}
		})
	}
	if err := WriteISO(context.Background(), Seed{Label: "cidata", Files: map[string][]byte{"../x": nil}}, filepath.Join(t.TempDir(), "x.iso")); err == nil {
		t.Error("WriteISO accepted a file name outside the ISO")
	}
}

// BenchmarkSeedISO is the budget (under 50 ms): a 64 KiB
// user-data plus 1 MiB of files (16 x 64 KiB), Build + WriteISO.
func BenchmarkSeedISO(b *testing.B) {
	if _, err := exec.LookPath(genisoimage); err != nil {
		b.Skip("genisoimage not installed")
	}
	script := "#!/bin/sh\n" + strings.Repeat("# padding to 64 KiB\n", MaxUserDataBytes/20)
	script += strings.Repeat("#", MaxUserDataBytes-len(script))
	in := Input{InstanceID: "pod-bench", Hostname: "bench", UserData: script}
	for i := range 16 {
		content := bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
		in.Files = append(in.Files, File{Path: fmt.Sprintf("/etc/bench/file-%02d", i), Content: content, Mode: 0o644})
	}
	dir := b.TempDir()
	ctx := context.Background()
	for b.Loop() {
		seed, err := Build(in)
		if err != nil {
			b.Fatal(err)
		}
		if err := WriteISO(ctx, seed, filepath.Join(dir, "seed.iso")); err != nil {
			b.Fatal(err)
		}
	}
}
