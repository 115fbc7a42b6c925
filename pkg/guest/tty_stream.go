package guest

import (
	"bytes"
	"strings"
)

// maxControlLine bounds a control line; a longer "line" is output.
const maxControlLine = 4096

// ttyStream separates the control lines of a TTY exec's stream from the
// command's output. A control line is prefix, text, "\n" (a "\r" before
// the "\n", as a terminal writes it, is dropped), anywhere in the stream.
// Output before the begin line and from the end line on is dropped.
type ttyStream struct {
	prefix  []byte
	pending []byte // a possible control line not complete yet
	begun   bool
	ended   bool
}

// feed takes the next bytes of the stream and returns the output to pass
// on and the texts of the control lines that completed, in order.
func (t *ttyStream) feed(p []byte) (out []byte, lines []string) {
	if t.ended {
		return nil, nil
	}
	t.pending = append(t.pending, p...)
	for {
		i := bytes.Index(t.pending, t.prefix)
		if i < 0 {
			keep := prefixOverlap(t.pending, t.prefix)
			out = t.emit(out, t.pending[:len(t.pending)-keep])
			t.pending = append([]byte(nil), t.pending[len(t.pending)-keep:]...)
			return out, lines
		}
		out = t.emit(out, t.pending[:i])
		rest := t.pending[i+len(t.prefix):]
		nl := bytes.IndexByte(rest, '\n')
		if nl > maxControlLine || nl < 0 && len(rest) > maxControlLine {
			// Too long for a control line, whether its end came in this
			// read or not: output.
			out = t.emit(out, t.prefix)
			t.pending = append([]byte(nil), rest...)
			continue
		}
		if nl < 0 {
			t.pending = append([]byte(nil), t.pending[i:]...)
			return out, lines
		}
		line := strings.TrimSuffix(string(rest[:nl]), "\r")
		t.pending = rest[nl+1:]
		lines = append(lines, line)
		switch {
		case line == "begin":
			t.begun = true
		case strings.HasPrefix(line, "end:"):
			t.ended = true
			t.pending = nil
			return out, lines
		}
	}
}

func (t *ttyStream) emit(out, b []byte) []byte {
	if t.begun && !t.ended {
		out = append(out, b...)
	}
	return out
}

// prefixOverlap is the length of the longest end of b that is a proper
// beginning of prefix (bytes that may start a control line).
func prefixOverlap(b, prefix []byte) int {
	for k := min(len(b), len(prefix)-1); k > 0; k-- {
		if bytes.HasSuffix(b, prefix[:k]) {
			return k
		}
	}
	return 0
}
