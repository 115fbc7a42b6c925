package oci

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/docker/config"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// FuzzRegistriesConf resolves a tenant's image name with a fuzzed
// registries.conf and looks up credentials in a fuzzed auth file, as a
// pull does (containers/image reads both files; vmpod resolves short
// names, checks blocked registries and hands the auth file's path on),
// and checks:
//   - a refused name or file is InvalidArgument or FailedPrecondition;
//   - every candidate is fully qualified and pinned (a tag or a digest,
//     never both); a name's digest is every candidate's digest, its tag
//     every candidate's tag; a fully-qualified name is its one candidate;
//   - a blocked candidate is PermissionDenied;
//   - no error shows a password of the auth file.
//
// Inputs that name a credential helper are skipped: containers/image
// would run docker-credential-<name> from PATH.
func FuzzRegistriesConf(f *testing.F) {
	dir := f.TempDir()
	confPath, authPath := filepath.Join(dir, "registries.conf"), filepath.Join(dir, "auth.json")
	secret := base64.StdEncoding.EncodeToString([]byte("alice:Passw0rdSecret"))
	for _, s := range [][3]string{
		{"unqualified-search-registries = [\"quay.io\", \"docker.io\"]\nshort-name-mode = \"enforcing\"\n", "vms/debian:12", ""},
		{"unqualified-search-registries = [\"registry.example:5000\"]\n[aliases]\n\"debian\" = \"quay.io/vms/debian\"\n", "debian@sha256:" + strings.Repeat("ab", 32), `{"auths":{"quay.io":{"auth":"` + secret + `"}}}`},
		{"[[registry]]\nlocation = \"quay.io/vms\"\nblocked = true\n", "quay.io/vms/x:1", `{"auths":{"quay.io/vms":{"auth":"` + secret + `"}}}`},
		{"[[registry]]\nprefix = \"*.example.com\"\nlocation = \"mirror.local\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"m2.local\"\n", "a.example.com/x", `{"auths":{"a.example.com":{"auth":"!!"}}}`},
		{"unqualified-search-registries = [\"bad registry\"]\n", "x", `{"auths":`},
		{"[aliases]\n\"x\" = \"not a ref\"\n", "x:tag", ""},
		{"garbage = [", "localhost/x", ""},
		{"", "UPPER/case", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, conf, name, auth string) {
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(authPath, []byte(auth), 0o600); err != nil {
			t.Fatal(err)
		}
		sysregistriesv2.InvalidateCache() // the same path, new content
		opts := Options{RegistriesConf: confPath, RegistriesConfDir: filepath.Join(dir, "none.d"), AuthFile: authPath,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
		sys, err := opts.systemContext()
		if err != nil {
			t.Fatal(err)
		}
		cands, err := candidates(sys, name, confPath)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("candidates(%q): %v is neither InvalidArgument nor FailedPrecondition", name, err)
			}
			return
		}
		if len(cands) == 0 {
			t.Fatalf("candidates(%q): none and no error", name)
		}
		orig, err := reference.Parse(name)
		if err != nil {
			t.Fatalf("candidates accepted %q, which does not parse: %v", name, err)
		}
		for _, c := range cands {
			checkCandidate(t, name, orig, c, len(cands))
			if err := checkBlocked(sys, c, confPath); err != nil && !errdefs.IsPermissionDenied(err) && !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("checkBlocked(%s): %v", c, err)
			}
			if !noCredentialHelpers(t, sys, auth) {
				continue
			}
			if _, err := config.GetCredentialsForRef(sys, c); err != nil && strings.Contains(err.Error(), "Passw0rdSecret") {
				t.Fatalf("looking up credentials shows the password: %v", err)
			}
		}
	})
}

func checkCandidate(t *testing.T, name string, orig reference.Reference, c reference.Named, n int) {
	t.Helper()
	if isShortName(c) {
		t.Fatalf("candidate %s of %q is not fully qualified", c, name)
	}
	d, digested := c.(reference.Digested)
	tg, tagged := c.(reference.Tagged)
	if digested == tagged {
		t.Fatalf("candidate %s of %q has a tag (%v) and a digest (%v), or neither", c, name, tagged, digested)
	}
	if od, ok := orig.(reference.Digested); ok && (!digested || d.Digest() != od.Digest()) {
		t.Fatalf("candidate %s of %q lost its digest", c, name)
	}
	if ot, ok := orig.(reference.Tagged); ok && !digested && tg.Tag() != ot.Tag() {
		t.Fatalf("candidate %s of %q has another tag", c, name)
	}
	if on, ok := orig.(reference.Named); ok && !isShortName(on) {
		full, err := reference.ParseNormalizedNamed(name)
		if err != nil || n != 1 || reference.TrimNamed(full).String() != reference.TrimNamed(c).String() {
			t.Fatalf("fully-qualified %q gave %d candidates, %s (%v)", name, n, c, err)
		}
	}
}

// noCredentialHelpers reports whether looking credentials up with sys and
// the auth file content auth runs no credential helper program.
func noCredentialHelpers(t *testing.T, sys *types.SystemContext, auth string) bool {
	t.Helper()
	helpers, err := sysregistriesv2.CredentialHelpers(sys)
	if err != nil || !slices.Equal(helpers, []string{sysregistriesv2.AuthenticationFileHelper}) {
		return false
	}
	// Decoded as containers/image decodes it (encoding/json, keys matched
	// without regard to case).
	var file struct {
		CredHelpers map[string]string `json:"credHelpers"`
	}
	if err := json.Unmarshal([]byte(auth), &file); err != nil {
		return true // the lookup fails before any helper
	}
	return len(file.CredHelpers) == 0
}

// FuzzAuth checks the CRI credentials of a pull (the tenant's image pull
// secret, through the kubelet): no rendering of Auth shows a secret; a
// bad auth field is InvalidArgument without its value; a good one is
// base64 of "user:password" and gives them back; credentials are
// attached only for the registry they name.
func FuzzAuth(f *testing.F) {
	f.Add("alice", "pw1", "", "tok2", "tok3", "registry.example.com:5000", "registry.example.com:5000")
	f.Add("", "", base64.StdEncoding.EncodeToString([]byte("bob:s3cretpass")), "", "", "https://index.docker.io/v1/", "docker.io")
	f.Add("", "", "%%%notbase64%%%", "", "", "", "quay.io")
	f.Add("", "", base64.StdEncoding.EncodeToString([]byte("no-colon-here")), "", "", "HTTP://Quay.IO/", "quay.io")
	f.Add("u", "p", "", "", "", "other.example", "quay.io")
	f.Fuzz(func(t *testing.T, user, pass, authField, idToken, regToken, server, registry string) {
		a := Auth{Username: user, Password: pass, Auth: authField, IdentityToken: idToken, RegistryToken: regToken, ServerAddress: server}
		render := func(a Auth) string {
			return fmt.Sprint(a) + fmt.Sprintf("%v %+v %#v %s", a, a, a, &a) + a.LogValue().String()
		}
		shown := render(a)
		// Every rendering is that of the same credentials with other
		// secrets: nothing of a secret but whether it is set is shown. (A
		// secret may still occur in it as part of the fixed text, e.g.
		// "toke" in "identity_token=": a search for the secret alone
		// cannot tell.)
		other := a
		for _, p := range []*string{&other.Password, &other.Auth, &other.IdentityToken, &other.RegistryToken} {
			if *p != "" {
				*p = "\x00"
			}
		}
		if want := render(other); shown != want {
			t.Fatalf("%q shows a secret: with other secrets it is %q", shown, want)
		}
		da, err := a.dockerAuth()
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || len(authField) >= 4 && strings.Contains(err.Error(), authField) {
				t.Fatalf("dockerAuth: %v", err)
			}
		} else if user == "" && pass == "" && authField != "" {
			raw, err := base64.StdEncoding.DecodeString(authField)
			if err != nil || string(raw) != da.Username+":"+da.Password {
				t.Fatalf("auth field %q gave user %q password %q", authField, da.Username, da.Password)
			}
		}
		sys := &types.SystemContext{}
		got, err := withAuth(sys, &a, registry, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return
		}
		if !a.forRegistry(registry) && (got != sys || got.DockerAuthConfig != nil || got.DockerBearerRegistryToken != "") {
			t.Fatalf("credentials for %q attached for the registry %q", server, registry)
		}
		if server == "" && !a.empty() && got == sys {
			t.Fatalf("credentials without a server address not attached for %q", registry)
		}
	})
}
