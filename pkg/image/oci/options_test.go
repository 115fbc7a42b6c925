package oci

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestPullAuth(t *testing.T) {
	reg := newTestRegistry(t)
	reg.requireAuth("alice", "s3cret")
	disk, _ := randomDisk(t, 1000)
	img := buildImage(t, false, "amd64", layer(t, gzipped, false, fileEntry("disk/d.qcow2", disk)))
	ref := reg.push(img, "private/vm:1")
	basic := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	for _, tc := range []struct {
		name    string
		auth    *Auth
		wantErr bool
	}{
		{"username and password", &Auth{Username: "alice", Password: "s3cret"}, false},
		{"auth field", &Auth{Auth: basic}, false},
		{"server address matches", &Auth{Username: "alice", Password: "s3cret", ServerAddress: "http://" + reg.host + "/"}, false},
		{"wrong password", &Auth{Username: "alice", Password: "nope"}, true},
		{"no credentials", nil, true},
		{"credentials for another registry", &Auth{Username: "alice", Password: "s3cret", ServerAddress: "other.example.com"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(t, "", reg.host)
			res, err := Pull(ctxTimeout(t), ref, tc.auth, opts)
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				checkPulled(t, res, opts, img, "/disk/d.qcow2", disk)
				return
			}
			t.Log(err)
			if !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "authentication") || !strings.Contains(err.Error(), "unauthorized") {
				t.Errorf("err = %v, want Unauthenticated mentioning authentication and unauthorized", err)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
			checkNoTempFiles(t, opts)
		})
	}
	if _, err := Pull(ctxTimeout(t), ref, &Auth{Auth: "%%%"}, testOptions(t, "", reg.host)); !errdefs.IsInvalidArgument(err) || strings.Contains(err.Error(), "%%%") {
		t.Errorf("bad auth field: err = %v, want InvalidArgument without the value", err)
	}
}

func TestAuthIsNotPrinted(t *testing.T) {
	a := Auth{Username: "alice", Password: "pw1", Auth: "YWxpY2U6cHcx", IdentityToken: "tok2", RegistryToken: "tok3", ServerAddress: "r.example"}
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "auth", a, "ptr", &a)
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%v %+v %#v %s", a, a, a, &a), logBuf.String()} {
		for _, secret := range []string{"pw1", "YWxpY2U6cHcx", "tok2", "tok3"} {
			if strings.Contains(s, secret) {
				t.Errorf("%q shows a secret", s)
			}
		}
		if !strings.Contains(s, "alice") {
			t.Errorf("%q lacks the username", s)
		}
	}
}
