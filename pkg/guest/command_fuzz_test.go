package guest

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzOutputFilter feeds a command output port's stream, cut into chunks at
// fuzzed places, through OutputFilter: the output is the stream up to its
// first end line with the wrapper's control lines taken out (the
// ttyStreamModel of a stream that begun at once), nothing after the end
// line is output, and how the stream is cut changes nothing.
func FuzzOutputFilter(f *testing.F) {
	f.Add([]byte("out\nmore \x1eN:end:7\nfrom a background process\n"), []byte{1, 2})
	f.Add([]byte("\x1eN:\x1eN:end:0\n"), []byte{0, 3})
	f.Add([]byte("binary \x1e\x1eN \x1eN:nope\n\x1eN:"+strings.Repeat("y", maxControlLine+3)+"\n"), []byte{250, 250})
	f.Fuzz(func(t *testing.T, data []byte, cuts []byte) {
		const prefix = "\x1eN:"
		// Copies: the engine may hand out data and cuts over one array
		// (equal inputs), so appending to one in place wrote into the other
		// (a '\n' turned into the 255 appended to cuts).
		data = append(bytes.Clone(data), '\n')
		cuts = bytes.Clone(cuts)
		fl := NewOutputFilter("N")
		var out []byte
		ended := false
		rest := data
		for _, c := range append(cuts, 255) {
			n := min(int(c)*17, len(rest))
			if c == 255 {
				n = len(rest)
			}
			o, e := fl.Feed(rest[:n])
			if ended && len(o) > 0 {
				t.Fatalf("output %q after the end line", o)
			}
			out, ended = append(out, o...), e
			rest = rest[n:]
		}
		want, lines := ttyStreamModel(append([]byte(prefix+"begin\n"), data...), []byte(prefix))
		if !bytes.Equal(out, want) {
			t.Fatalf("output %q, want %q", out, want)
		}
		wantEnded := len(lines) > 0 && strings.HasPrefix(lines[len(lines)-1], "end:")
		if ended != wantEnded {
			t.Fatalf("ended %v, want %v (control lines %q)", ended, wantEnded, lines)
		}
	})
}

// FuzzParseTrace: whatever the guest writes in its state files, the trace
// holds only a pid of 1 to 2^22 and an exit code of 0 to 255.
func FuzzParseTrace(f *testing.F) {
	f.Add("pid=42\nexit=3\nalive\n")
	f.Add("pid=-1\nexit=256\npid=4194305\n")
	f.Fuzz(func(t *testing.T, out string) {
		tr := parseTrace(out)
		if tr.PID < 0 || tr.PID > 1<<22 || (tr.ExitCode != nil && (*tr.ExitCode < 0 || *tr.ExitCode > 255)) {
			t.Fatalf("%q: %+v", out, tr)
		}
	})
}
