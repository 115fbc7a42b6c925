package guest

import (
	"strings"
	"testing"
)

func TestTTYStream(t *testing.T) {
	const prefix = "\x1eN:"
	stream := "noise before\x1eN:begin\n# ls\r\n\x1eN:tty=/dev/pts/3\r\nfile\r\n\x1eother\x1e\x1eN:bogus\n# exit 3\r\n\x1eN:end:3\nafter the end"
	wantOut := "# ls\r\nfile\r\n\x1eother\x1e# exit 3\r\n"
	wantLines := "begin|tty=/dev/pts/3|bogus|end:3"
	// Every way of cutting the stream in two, and byte by byte.
	for cut := 0; cut <= len(stream); cut++ {
		ts := ttyStream{prefix: []byte(prefix)}
		o1, l1 := ts.feed([]byte(stream[:cut]))
		o2, l2 := ts.feed([]byte(stream[cut:]))
		if out, lines := string(o1)+string(o2), strings.Join(append(l1, l2...), "|"); out != wantOut || lines != wantLines {
			t.Fatalf("cut at %d: out %q lines %q", cut, out, lines)
		}
	}
	ts := ttyStream{prefix: []byte(prefix)}
	var out, lines []string
	for i := range len(stream) {
		o, l := ts.feed([]byte{stream[i]})
		out, lines = append(out, string(o)), append(lines, l...)
		// Output is passed on at once unless it may start a control line.
		if i == strings.Index(stream, "file") && strings.Join(out, "") != wantOut[:strings.Index(wantOut, "file")+1] {
			t.Fatalf("output held back: %q", strings.Join(out, ""))
		}
	}
	if strings.Join(out, "") != wantOut || strings.Join(lines, "|") != wantLines {
		t.Fatalf("byte by byte: out %q lines %q", out, lines)
	}
	// A prefix with no line end in sight is output after all.
	ts = ttyStream{prefix: []byte(prefix), begun: true}
	long := prefix + strings.Repeat("x", maxControlLine+1)
	if o, l := ts.feed([]byte(long)); string(o) != long || l != nil {
		t.Fatalf("long non-line: %d bytes out, lines %q", len(o), l)
	}
}
