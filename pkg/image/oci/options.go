package oci

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"go.podman.io/image/v5/types"

	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// DefaultRegistriesConf is where registries.conf is read from unless
// Options.RegistriesConf says otherwise.
const DefaultRegistriesConf = "/etc/containers/registries.conf"

// Options configures a pull. The zero value works: registries.conf from
// its default place, platform linux/GOARCH, the default logger.
type Options struct {
	// TmpDir is the directory the disk file is written to (the store's
	// tmp dir, on the same file system as the store so the caller can
	// rename the file). Empty: os.TempDir().
	TmpDir string
	// RegistriesConf is the containers-registries.conf(5) file: mirrors,
	// blocked registries, `insecure = true` for plain-HTTP registries,
	// unqualified-search-registries, short-name-mode, aliases. Default
	// DefaultRegistriesConf; a missing file means an empty configuration.
	// Note that containers/image caches a parsed file for the life of the
	// process.
	RegistriesConf string
	// RegistriesConfDir is the drop-in directory read after RegistriesConf.
	// Default RegistriesConf + ".d"; a missing directory is fine.
	RegistriesConfDir string
	// RegistriesDir is the containers-registries.d(5) directory. Empty: the
	// library default (/etc/containers/registries.d).
	RegistriesDir string
	// CertDir holds one host[:port] directory per registry with ca.crt,
	// client.cert and client.key (containers-certs.d(5)). Empty: the
	// library defaults (/etc/containers/certs.d, /etc/docker/certs.d).
	CertDir string
	// AuthFile is a containers-auth.json(5) file consulted when a pull
	// carries no credentials. Empty: the library defaults
	// (${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json, ...).
	AuthFile string
	// OS, Arch and Variant choose the entry of a multi-arch index.
	// Defaults "linux", runtime.GOARCH and the CPU's variant.
	OS, Arch, Variant string
	// ProgressInterval is how often a running pull logs its progress.
	// Default 5s.
	ProgressInterval time.Duration
	// Log receives the pull's logs. Default: the context's logger
	// (pkg/logging). Credentials are never logged.
	Log *slog.Logger
	// Downloaded, when set, is told the blob bytes each pull read from
	// the registry, when it ends (failed or cancelled ones too), for
	// metrics.
	Downloaded func(n int64)
	// Limits bound each pull: blob, layer and disk sizes, the free space,
	// the time to an answer, a stalled blob. Zero fields: the defaults.
	Limits transfer.Limits
}

// Auth is the credentials of one pull; it mirrors the CRI's AuthConfig.
// Its String and LogValue methods hide the secrets.
type Auth struct {
	Username string
	Password string
	// Auth is base64("username:password"); used when Username and
	// Password are empty.
	Auth string
	// IdentityToken is an OAuth2 refresh token, exchanged for a registry
	// token.
	IdentityToken string
	// RegistryToken is a bearer token sent to the registry as is.
	RegistryToken string
	// ServerAddress, if set, is the registry the credentials are for
	// ("registry.example.com:5000", "https://index.docker.io/v1/"); they are
	// not sent to any other registry (another unqualified-search registry
	// a short name resolves to, for instance). Mirrors on other hosts never
	// get them either.
	ServerAddress string
}

func (a *Auth) empty() bool {
	return a == nil || (a.Username == "" && a.Password == "" && a.Auth == "" && a.IdentityToken == "" && a.RegistryToken == "")
}

// String describes a without its secrets.
func (a Auth) String() string {
	var parts []string
	if a.Username != "" {
		parts = append(parts, "username="+a.Username)
	}
	if a.Password != "" || a.Auth != "" {
		parts = append(parts, "password=<redacted>")
	}
	if a.IdentityToken != "" {
		parts = append(parts, "identity_token=<redacted>")
	}
	if a.RegistryToken != "" {
		parts = append(parts, "registry_token=<redacted>")
	}
	if a.ServerAddress != "" {
		parts = append(parts, "server="+a.ServerAddress)
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// GoString is String, so %#v does not print the secrets either.
func (a Auth) GoString() string { return a.String() }

// LogValue keeps the secrets out of slog output.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// dockerAuth converts a to containers/image's form.
func (a *Auth) dockerAuth() (*types.DockerAuthConfig, error) {
	user, pass := a.Username, a.Password
	if user == "" && pass == "" && a.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			// The value is a secret: do not echo it.
			return nil, fmt.Errorf("the credentials' auth field is not valid base64: %w", errdefs.ErrInvalidArgument)
		}
		u, p, ok := strings.Cut(string(raw), ":")
		if !ok {
			return nil, fmt.Errorf("the credentials' auth field is not base64 of \"username:password\": %w", errdefs.ErrInvalidArgument)
		}
		user, pass = u, p
	}
	return &types.DockerAuthConfig{Username: user, Password: pass, IdentityToken: a.IdentityToken}, nil
}

// forRegistry reports whether a may be sent to registry (a host[:port] as
// in reference.Domain).
func (a *Auth) forRegistry(registry string) bool {
	return a.ServerAddress == "" || normalizeRegistryHost(a.ServerAddress) == normalizeRegistryHost(registry)
}

// normalizeRegistryHost turns a server address as kubelet and docker
// config files write it into a host[:port] comparable with
// reference.Domain.
func normalizeRegistryHost(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "https://")
	s = strings.TrimPrefix(s, "http://")
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return s
}

// withDefaults fills in the defaults of the zero fields.
func (o Options) withDefaults() Options {
	if o.TmpDir == "" {
		o.TmpDir = os.TempDir()
	}
	if o.RegistriesConf == "" {
		o.RegistriesConf = DefaultRegistriesConf
	}
	if o.RegistriesConfDir == "" {
		o.RegistriesConfDir = o.RegistriesConf + ".d"
	}
	if o.OS == "" {
		o.OS = "linux"
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Second
	}
	return o
}

// systemContext builds the containers/image settings of a pull, without
// credentials (see withAuth).
func (o Options) systemContext() (*types.SystemContext, error) {
	conf := o.RegistriesConf
	if _, err := os.Stat(conf); errors.Is(err, fs.ErrNotExist) {
		// containers/image fails on an explicitly named file that does not
		// exist, and without a name it reads $HOME's and
		// $CONTAINERS_REGISTRIES_CONF's files too. An empty file is the
		// configuration a missing one means.
		conf = os.DevNull
	} else if err != nil {
		return nil, fmt.Errorf("registries configuration %s: %w: %w", conf, err, errdefs.ErrFailedPrecondition)
	}
	return &types.SystemContext{
		SystemRegistriesConfPath:    conf,
		SystemRegistriesConfDirPath: o.RegistriesConfDir,
		RegistriesDirPath:           o.RegistriesDir,
		DockerPerHostCertDirPath:    o.CertDir,
		AuthFilePath:                o.AuthFile,
		OSChoice:                    o.OS,
		ArchitectureChoice:          o.Arch,
		VariantChoice:               o.Variant,
		BigFilesTemporaryDir:        o.TmpDir,
		DockerRegistryUserAgent:     "vmpod",
	}, nil
}

// withAuth returns a copy of sys carrying auth for registry, if auth is
// meant for it.
func withAuth(sys *types.SystemContext, auth *Auth, registry string, log *slog.Logger) (*types.SystemContext, error) {
	if auth.empty() {
		return sys, nil
	}
	if !auth.forRegistry(registry) {
		log.Debug("credentials are for another registry, pulling anonymously", "registry", registry, "credentials_for", auth.ServerAddress)
		return sys, nil
	}
	c := *sys
	if auth.RegistryToken != "" {
		c.DockerBearerRegistryToken = auth.RegistryToken
	}
	if auth.Username != "" || auth.Password != "" || auth.Auth != "" || auth.IdentityToken != "" {
		da, err := auth.dockerAuth()
		if err != nil {
			return nil, err
		}
		c.DockerAuthConfig = da
	}
	return &c, nil
}
