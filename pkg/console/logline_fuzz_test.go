package console

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// FuzzLineSplitter feeds a guest's console bytes, cut into chunks at
// fuzzed places with timed flushes in between, through the splitter and
// checks what the kubelet will read:
//   - every line is a valid CRI log line "<RFC 3339 ts> stdout <F|P> <text>\n"
//     whose text holds no newline;
//   - no text is longer than the line limit, but for the last P line at
//     the end of the stream, which may carry one held-back "\r" beyond it;
//   - no P line is empty;
//   - the texts, each F line followed by "\n", give back the stream with
//     one "\r" dropped before every "\n" (serial consoles send "\r\n").
//
// cuts drives the chunking: each byte takes its low 6 bits as the length
// of the next chunk and, when its top bit is set, fires the PartialFlush
// timer after it. maxLen is the line limit (1 to 64, to reach the splits).
func FuzzLineSplitter(f *testing.F) {
	f.Add([]byte("hello\r\nlogin: "), uint8(15), []byte{3, 0x84, 10})
	f.Add([]byte("0123456789\n"), uint8(3), []byte{})
	f.Add([]byte("0123\r\n0123\r"), uint8(3), []byte{5, 0x80, 1})
	f.Add([]byte("a\r\r\n\r\n\n50%\r60%\r\n"), uint8(63), []byte{1, 1, 0x81, 2})
	f.Add([]byte("\xff\xfe \x1b[0m\n"), uint8(2), []byte{0x82, 0x82})
	f.Add([]byte("abc\r"), uint8(2), []byte{0x84})
	f.Fuzz(func(t *testing.T, data []byte, maxLen uint8, cuts []byte) {
		limit := int(maxLen%64) + 1
		ts := criTimestamp(time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC))
		s := newLineSplitter(limit)
		var out []byte
		rest := data
		for _, c := range cuts {
			n := min(int(c&0x3f), len(rest))
			out = s.feed(out, rest[:n], ts)
			rest = rest[n:]
			if c&0x80 != 0 {
				out = s.flush(out, ts)
			}
			if len(s.pending) > limit+1 {
				t.Fatalf("the splitter holds %d bytes, more than the limit %d plus one", len(s.pending), limit)
			}
		}
		out = s.feed(out, rest, ts)
		out = s.flushAll(out, ts)

		if len(out) > 0 && out[len(out)-1] != '\n' {
			t.Fatalf("output does not end in a newline: %q", out)
		}
		var text []byte
		lines := bytes.SplitAfter(out, []byte("\n"))
		lines = lines[:len(lines)-1] // the empty rest after the last "\n"
		for i, line := range lines {
			tag, body, err := parseCRILogLine(line)
			if err != nil {
				t.Fatalf("line %d %q: %v", i, line, err)
			}
			last := i == len(lines)-1
			switch {
			case len(body) <= limit:
			case len(body) == limit+1 && last && tag == tagPartial && body[limit] == '\r':
				// The end of the stream flushes a held-back "\r" too.
			default:
				t.Fatalf("line %d has %d bytes of text, above the limit %d: %q", i, len(body), limit, line)
			}
			if tag == tagPartial && len(body) == 0 {
				t.Fatalf("line %d is an empty P line", i)
			}
			text = append(text, body...)
			if tag == tagFull {
				text = append(text, '\n')
			}
		}
		if want := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")); !bytes.Equal(text, want) {
			t.Fatalf("the log's text is %q, want %q (the input with \\r\\n as \\n)", text, want)
		}
	})
}

// parseCRILogLine parses one line of a CRI log file as the kubelet does
// (pkg/kubelet/kuberuntime/logs parseCRILog), more strictly: the
// timestamp must be RFC 3339 with nanoseconds, the stream stdout, the tag
// F or P, and the line must end in its only "\n".
func parseCRILogLine(line []byte) (tag byte, text []byte, err error) {
	body, ok := bytes.CutSuffix(line, []byte("\n"))
	if !ok || bytes.IndexByte(body, '\n') >= 0 {
		return 0, nil, fmt.Errorf("not one newline-terminated line")
	}
	ts, rest, ok := bytes.Cut(body, []byte(" "))
	if !ok {
		return 0, nil, fmt.Errorf("no timestamp")
	}
	if _, err := time.Parse(time.RFC3339Nano, string(ts)); err != nil {
		return 0, nil, err
	}
	stream, rest, ok := bytes.Cut(rest, []byte(" "))
	if !ok || string(stream) != "stdout" {
		return 0, nil, fmt.Errorf("stream %q is not stdout", stream)
	}
	tags, text, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(tags) != 1 || (tags[0] != tagFull && tags[0] != tagPartial) {
		return 0, nil, fmt.Errorf("tag %q is not F or P", tags)
	}
	return tags[0], text, nil
}
