package guest

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// FuzzTTYStream feeds a guest's TTY exec stream, cut into chunks at fuzzed
// places, through ttyStream and compares it with a reference that reads
// the whole stream at once (ttyStreamModel). So:
//   - the output never holds a control line (prefix, at most
//     maxControlLine bytes without a newline, "\n"): every one the stream
//     carries is taken out and returned as a line;
//   - nothing before the begin line or from the end line on is output;
//   - how the stream is cut into reads changes nothing.
//
// The stream gets a final "\n" so that nothing is left pending. cuts
// gives the chunk lengths (each byte times 17, so that chunks may pass
// maxControlLine); the nonce is short so that the fuzzer finds prefixes.
func FuzzTTYStream(f *testing.F) {
	f.Add([]byte("noise before\x1eN:begin\n# ls\r\n\x1eN:tty=/dev/pts/3\r\nfile\r\n\x1eother\x1e\x1eN:bogus\n# exit 3\r\n\x1eN:end:3\nafter the end"), []byte{1, 2, 3})
	f.Add([]byte("\x1eN:begin\n\x1eN\x1eN:x\n:begin\n"), []byte{})
	f.Add([]byte("\x1eN:begin\n\x1eN:"+strings.Repeat("x", maxControlLine+10)+"\n\x1eN:end:0\n"), []byte{250, 1, 250})
	f.Add([]byte("\x1eN:begin\r\n\x1e\x1eN:\x1eN:end:\n"), []byte{0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte, cuts []byte) {
		const prefix = "\x1eN:"
		// A copy: the engine may hand out data and cuts over one array.
		data = append(bytes.Clone(data), '\n')
		ts := ttyStream{prefix: []byte(prefix)}
		var out []byte
		var lines []string
		rest := data
		for _, c := range cuts {
			n := min(int(c)*17, len(rest))
			o, l := ts.feed(rest[:n])
			out, lines = append(out, o...), append(lines, l...)
			rest = rest[n:]
		}
		o, l := ts.feed(rest)
		out, lines = append(out, o...), append(lines, l...)
		if !ts.ended && len(ts.pending) != 0 {
			t.Fatalf("%q still pending after a final newline", ts.pending)
		}

		wantOut, wantLines := ttyStreamModel(data, []byte(prefix))
		if !bytes.Equal(out, wantOut) {
			t.Fatalf("output %q, want %q", out, wantOut)
		}
		if !slices.Equal(lines, wantLines) {
			t.Fatalf("control lines %q, want %q", lines, wantLines)
		}
		for _, l := range lines {
			if len(l) > maxControlLine || strings.Contains(l, "\n") {
				t.Fatalf("control line of %d bytes %q", len(l), l)
			}
		}
	})
}

// ttyStreamModel is what ttyStream should make of a whole stream, written
// the simple way: at each prefix, a "\n" at most maxControlLine bytes
// further on ends a control line (one "\r" before it dropped); otherwise
// the prefix is output and the search goes on after it.
func ttyStreamModel(data, prefix []byte) (out []byte, lines []string) {
	begun := false
	for {
		i := bytes.Index(data, prefix)
		if i < 0 {
			if begun {
				out = append(out, data...)
			}
			return out, lines
		}
		if begun {
			out = append(out, data[:i]...)
		}
		rest := data[i+len(prefix):]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 || nl > maxControlLine {
			if begun {
				out = append(out, prefix...)
			}
			data = rest
			continue
		}
		line := strings.TrimSuffix(string(rest[:nl]), "\r")
		lines = append(lines, line)
		data = rest[nl+1:]
		switch {
		case line == "begin":
			begun = true
		case strings.HasPrefix(line, "end:"):
			return out, lines
		}
	}
}

// TestTTYStreamLongLineInOneRead: a "control line" longer than
// maxControlLine is output whether its newline comes in the same read or a
// later one. Before, one read holding the whole line made it a control
// line (up to the read buffer and more), so the bound depended on how the
// guest's writes were cut into reads.
func TestTTYStreamLongLineInOneRead(t *testing.T) {
	const prefix = "\x1eN:"
	long := prefix + strings.Repeat("x", maxControlLine+1) + "\n"
	stream := prefix + "begin\n" + long + prefix + "end:0\n"
	ts := ttyStream{prefix: []byte(prefix)}
	out, lines := ts.feed([]byte(stream))
	if string(out) != long || !slices.Equal(lines, []string{"begin", "end:0"}) {
		t.Fatalf("one read: %d bytes out, lines %.40q", len(out), lines)
	}
}
