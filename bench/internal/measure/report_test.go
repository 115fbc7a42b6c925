package measure

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSection(t *testing.T) {
	s := NewSection("x", "/nonexistent", 3)
	if !strings.Contains(s.String(), "build unknown") || !strings.Contains(s.String(), "3 runs") {
		t.Fatalf("header = %q", s.String())
	}
	s.Table([]string{"a", "b"}, [][]string{{"1", "2"}})
	if !strings.HasSuffix(s.String(), "| a | b |\n| --- | --- |\n| 1 | 2 |\n\n") {
		t.Fatalf("table = %q", s.String())
	}
	p := filepath.Join(t.TempDir(), "x.md")
	if err := s.Write(p); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != s.String() {
		t.Fatalf("written %q", b)
	}
	if err := s.Write(""); err != nil {
		t.Fatal(err)
	}
}

func TestSpread(t *testing.T) {
	ms := func(d time.Duration) string { return Ms(d) }
	few := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}
	if got, want := Spread(few, ms), "2.0 ms (min–max 1.0 ms–3.0 ms)"; got != want {
		t.Errorf("Spread(3) = %q, want %q", got, want)
	}
	var ten []time.Duration
	for i := 1; i <= 10; i++ {
		ten = append(ten, time.Duration(i)*time.Millisecond)
	}
	if got, want := Spread(ten, ms), "5.5 ms (p10–p90 1.0 ms–9.0 ms, min–max 1.0 ms–10.0 ms)"; got != want {
		t.Errorf("Spread(10) = %q, want %q", got, want)
	}
}

func TestBuildIDOfATestBinary(t *testing.T) {
	// A test binary carries no VCS stamp; any other answer is a commit.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got := BuildID(exe); got != "unknown" && len(strings.TrimSuffix(got, "+dirty")) != 7 {
		t.Fatalf("BuildID = %q", got)
	}
}
