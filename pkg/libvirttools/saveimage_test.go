package libvirttools

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestSaveImageRewrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mem.save")
	var b bytes.Buffer
	payload := bytes.Repeat([]byte("QEVM"), 1000)
	if err := WriteSaveImage(&b, "<domain><name>a</name></domain>", "<cookie/>", 4096, payload); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if x, err := SaveImageXML(p); err != nil || x != "<domain><name>a</name></domain>" {
		t.Fatalf("SaveImageXML = %q, %v", x, err)
	}
	longer := "<domain><name>b-with-a-longer-name</name><uuid>x</uuid></domain>"
	if err := RewriteSaveImageXML(p, longer); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if x, err := SaveImageXML(p); err != nil || x != longer {
		t.Fatalf("after rewrite: %q, %v", x, err)
	}
	if !bytes.HasSuffix(got, payload) || len(got) != b.Len() {
		t.Fatalf("the stream moved: %d bytes, was %d", len(got), b.Len())
	}
	h, err := readSaveImageHeader(bytes.NewReader(got))
	if err != nil || string(h.cookie) != "<cookie/>" {
		t.Fatalf("cookie %q, %v", h.cookie, err)
	}
	if err := RewriteSaveImageXML(p, strings.Repeat("x", 5000)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("an XML larger than the header: %v", err)
	}
}

func TestSaveImageRejects(t *testing.T) {
	good := func() []byte {
		var b bytes.Buffer
		WriteSaveImage(&b, "<domain/>", "<c/>", 256, nil)
		return b.Bytes()
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"magic":            func(b []byte) []byte { b[0] = 'X'; return b },
		"version":          func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 3); return b },
		"huge data":        func(b []byte) []byte { binary.LittleEndian.PutUint32(b[20:], 1<<30); return b },
		"no XML":           func(b []byte) []byte { b[saveImageHeaderSize] = 0; return b },
		"cookie outside":   func(b []byte) []byte { binary.LittleEndian.PutUint32(b[32:], 1000); return b },
		"cookie in XML":    func(b []byte) []byte { binary.LittleEndian.PutUint32(b[32:], 2); return b },
		"truncated":        func(b []byte) []byte { return b[:50] },
		"truncated data":   func(b []byte) []byte { return b[:saveImageHeaderSize+10] },
		"unterminated all": func(b []byte) []byte { return append(b[:saveImageHeaderSize], bytes.Repeat([]byte("x"), 256)...) },
	} {
		if _, err := readSaveImageHeader(bytes.NewReader(mutate(good()))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzSaveImageHeader(f *testing.F) {
	var b bytes.Buffer
	WriteSaveImage(&b, "<domain/>", "<c/>", 64, []byte("stream"))
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readSaveImageHeader(bytes.NewReader(data))
		if err != nil {
			return
		}
		if bytes.IndexByte(h.xml, 0) >= 0 || bytes.IndexByte(h.cookie, 0) >= 0 {
			t.Fatalf("NUL inside a parsed field")
		}
		if _, err := h.encode(h.xml); err != nil {
			t.Fatalf("a parsed header does not re-encode: %v", err)
		}
	})
}
