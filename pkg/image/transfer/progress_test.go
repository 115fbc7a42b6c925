package transfer

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the reporting goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressReport(t *testing.T) {
	for _, tc := range []struct {
		name    string
		total   int64
		written bool
		want    []string
		notWant []string
	}{
		{"known size", 4 << 20, false,
			[]string{`msg="pull progress"`, "bytes=1048576", "bytes_total=4194304", "percent=25.0", "rate_mib_s="},
			[]string{"disk_bytes"}},
		{"unknown size", -1, false,
			[]string{"bytes=1048576", "rate_mib_s="},
			[]string{"bytes_total", "percent", "disk_bytes"}},
		{"disk bytes", 4 << 20, true,
			[]string{"bytes=1048576", "bytes_total=4194304", "disk_bytes=3000", "rate_mib_s="},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			log := slog.New(slog.NewTextHandler(&out, nil))
			p := &Progress{Start: time.Now(), Total: tc.total, TrackWritten: tc.written}
			p.Received.Store(1 << 20)
			p.Written.Store(3000)
			stop := p.Report(log, 5*time.Millisecond)
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(out.String(), "pull progress") && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			stop()
			got := out.String()
			// stop waits for the reporter: nothing is logged after it.
			time.Sleep(20 * time.Millisecond)
			if out.String() != got {
				t.Errorf("logged after stop:\n%s", strings.TrimPrefix(out.String(), got))
			}
			line, _, _ := strings.Cut(got, "\n")
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("progress line %q lacks %q", line, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(line, w) {
					t.Errorf("progress line %q has %q", line, w)
				}
			}
		})
	}
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		d    time.Duration
		want string
	}{
		{10 << 20, 2 * time.Second, "5.0"},
		{3 << 19, time.Second, "1.5"},
		{1 << 20, 0, "1000.0"}, // at least a millisecond
	} {
		if got := Rate(tc.n, tc.d); got != tc.want {
			t.Errorf("Rate(%d, %v) = %s, want %s", tc.n, tc.d, got, tc.want)
		}
	}
}
