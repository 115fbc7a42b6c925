package console

import (
	"bytes"
	"time"
)

// CRI log line tags (k8s.io/cri-api runtime.LogTagFull and LogTagPartial).
const (
	tagFull    = 'F'
	tagPartial = 'P'
)

// criTimestamp formats t as the CRI log format's timestamp: RFC 3339 with
// nanoseconds, in UTC, as containerd and the kubelet write it.
func criTimestamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// CRI log streams.
const (
	streamStdout = "stdout"
	streamStderr = "stderr"
)

// appendLogLine appends one CRI log line "<ts> <stream> <tag> <text>\n" to
// out.
func appendLogLine(out []byte, ts, stream string, tag byte, text []byte) []byte {
	out = append(out, ts...)
	out = append(out, ' ')
	out = append(out, stream...)
	out = append(out, ' ', tag, ' ')
	out = append(out, text...)
	return append(out, '\n')
}

// lineSplitter turns a byte stream into CRI log lines of one stream
// (stdout unless set). It holds the current, unterminated line: at most
// maxLen bytes plus possibly one "\r" beyond, which it keeps back because a
// "\n" may follow and the "\r" must then be dropped. With a prefix, every
// line starts with it (the first P line of a long line only, so that the
// kubelet's joined line has it once). It is not safe for concurrent use.
type lineSplitter struct {
	maxLen  int
	stream  string
	prefix  []byte
	midLine bool // the last line written was a P line
	pending []byte
}

func newLineSplitter(maxLen int) *lineSplitter {
	return &lineSplitter{maxLen: maxLen, stream: streamStdout, pending: make([]byte, 0, maxLen+1)}
}

// line appends one log line of the splitter's stream.
func (s *lineSplitter) line(out []byte, ts string, tag byte, text []byte) []byte {
	if len(s.prefix) > 0 && !s.midLine {
		text = append(append(make([]byte, 0, len(s.prefix)+len(text)), s.prefix...), text...)
	}
	s.midLine = tag == tagPartial
	return appendLogLine(out, ts, s.stream, tag, text)
}

// feed appends to out the log lines that p completes, stamped ts, and keeps
// the unterminated rest.
func (s *lineSplitter) feed(out, p []byte, ts string) []byte {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return s.add(out, p, ts)
		}
		out = s.add(out, p[:i], ts)
		out = s.line(out, ts, tagFull, bytes.TrimSuffix(s.pending, []byte{'\r'}))
		s.pending = s.pending[:0]
		p = p[i+1:]
	}
	return out
}

// add appends seg, which holds no "\n", to the pending line, writing a P line
// each time the pending line would grow past maxLen.
func (s *lineSplitter) add(out, seg []byte, ts string) []byte {
	for len(seg) > 0 {
		if room := s.maxLen - len(s.pending); room > 0 {
			n := min(room, len(seg))
			s.pending = append(s.pending, seg[:n]...)
			seg = seg[n:]
			continue
		}
		// The pending line is full. A lone final "\r" may still be the
		// start of a "\r\n": keep it back rather than split before it.
		if len(s.pending) == s.maxLen && len(seg) == 1 && seg[0] == '\r' {
			s.pending = append(s.pending, '\r')
			return out
		}
		out = s.line(out, ts, tagPartial, s.pending[:s.maxLen])
		s.pending = s.pending[:copy(s.pending, s.pending[s.maxLen:])]
	}
	return out
}

// flushable reports whether a timed flush would write anything: whether the
// pending line holds more than a trailing "\r".
func (s *lineSplitter) flushable() bool {
	n := len(s.pending)
	return n > 1 || n == 1 && s.pending[0] != '\r'
}

// flush appends the pending line as a P line, for a line that has waited too
// long for its newline. A trailing "\r" stays pending: if "\n" comes next it
// is dropped with it.
func (s *lineSplitter) flush(out []byte, ts string) []byte {
	if !s.flushable() {
		return out
	}
	text := s.pending
	if text[len(text)-1] == '\r' {
		text = text[:len(text)-1]
	}
	out = s.line(out, ts, tagPartial, text)
	s.pending = s.pending[:copy(s.pending, s.pending[len(text):])]
	return out
}

// flushAll appends everything pending as a P line, for the end of the stream.
func (s *lineSplitter) flushAll(out []byte, ts string) []byte {
	if len(s.pending) == 0 {
		return out
	}
	out = s.line(out, ts, tagPartial, s.pending)
	s.pending = s.pending[:0]
	return out
}

// finish appends everything pending as an F line, for the end of a
// command's output: its last line needs no newline to be whole (as
// containerd logs it).
func (s *lineSplitter) finish(out []byte, ts string) []byte {
	if len(s.pending) == 0 {
		return out
	}
	out = s.line(out, ts, tagFull, bytes.TrimSuffix(s.pending, []byte{'\r'}))
	s.pending = s.pending[:0]
	return out
}
