package console

import (
	"strings"
	"testing"
	"time"
)

func TestCRITimestamp(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC), "2024-05-01T10:00:00.123456789Z"},
		{time.Date(2024, 5, 1, 12, 0, 0, 200000000, time.FixedZone("CEST", 2*3600)), "2024-05-01T10:00:00.2Z"},
		{time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), "2024-05-01T10:00:00Z"},
	}
	for _, tt := range tests {
		if got := criTimestamp(tt.in); got != tt.want {
			t.Errorf("criTimestamp(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestLineSplitter drives the splitter with a script of operations: a plain
// string is fed, "<flush>" is the PartialFlush timer firing, "<end>" the end
// of the stream. Every line is stamped "T".
func TestLineSplitter(t *testing.T) {
	const flush, end = "<flush>", "<end>"
	tests := []struct {
		name   string
		maxLen int
		ops    []string
		want   []string // log lines without the "T stdout " prefix and "\n"
	}{
		{name: "full line", ops: []string{"hello\n"}, want: []string{"F hello"}},
		{name: "CRLF", ops: []string{"hello\r\n"}, want: []string{"F hello"}},
		{name: "only one CR stripped", ops: []string{"a\r\r\n"}, want: []string{"F a\r"}},
		{name: "CR inside a line kept", ops: []string{"50%\r60%\r\n"}, want: []string{"F 50%\r60%"}},
		{name: "empty lines", ops: []string{"\n\r\n"}, want: []string{"F ", "F "}},
		{name: "lines across chunks", ops: []string{"ab", "c\r\nde", "f\r", "\n"}, want: []string{"F abc", "F def"}},
		{name: "bytes as sent", ops: []string{"\xff\xfe \x1b[0m\n"}, want: []string{"F \xff\xfe \x1b[0m"}},
		{name: "nothing pending", ops: []string{flush, end}, want: nil},
		{name: "timed flush of a prompt", ops: []string{"login: ", flush, "root\r\n"}, want: []string{"P login: ", "F root"}},
		{name: "timed flush twice", ops: []string{"a", flush, "b", flush, "c\n"}, want: []string{"P a", "P b", "F c"}},
		{name: "timed flush keeps trailing CR", ops: []string{"abc\r", flush, "\n"}, want: []string{"P abc", "F "}},
		{name: "timed flush of a lone CR writes nothing", ops: []string{"\r", flush, "x\n"}, want: []string{"F \rx"}},
		{name: "end flushes everything", ops: []string{"x\nabc\r", end}, want: []string{"F x", "P abc\r"}},
		{name: "long line split", maxLen: 4, ops: []string{"0123456789\n"}, want: []string{"P 0123", "P 4567", "F 89"}},
		{name: "long line split across chunks", maxLen: 4, ops: []string{"01", "23", "45", "6789", "\n"}, want: []string{"P 0123", "P 4567", "F 89"}},
		{name: "exactly max", maxLen: 4, ops: []string{"0123\n"}, want: []string{"F 0123"}},
		{name: "exactly max with CRLF", maxLen: 4, ops: []string{"0123\r\n"}, want: []string{"F 0123"}},
		{name: "exactly max, CR and LF in two chunks", maxLen: 4, ops: []string{"0123\r", "\n"}, want: []string{"F 0123"}},
		{name: "max then CR not before LF", maxLen: 4, ops: []string{"0123\r", "X\n"}, want: []string{"P 0123", "F \rX"}},
		{name: "twice max", maxLen: 4, ops: []string{"01234567\r\n"}, want: []string{"P 0123", "F 4567"}},
		{name: "max then end", maxLen: 4, ops: []string{"0123\r", end}, want: []string{"P 0123\r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxLen := tt.maxLen
			if maxLen == 0 {
				maxLen = DefaultMaxLineLen
			}
			s := newLineSplitter(maxLen)
			var out []byte
			for _, op := range tt.ops {
				switch op {
				case flush:
					out = s.flush(out, "T")
				case end:
					out = s.flushAll(out, "T")
				default:
					out = s.feed(out, []byte(op), "T")
				}
			}
			var want strings.Builder
			for _, l := range tt.want {
				want.WriteString("T stdout " + l + "\n")
			}
			if string(out) != want.String() {
				t.Errorf("log =\n%q\nwant\n%q", out, want.String())
			}
			if len(s.pending) > maxLen+1 {
				t.Errorf("pending holds %d bytes, more than max %d + 1", len(s.pending), maxLen)
			}
		})
	}
}
