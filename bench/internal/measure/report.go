package measure

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Section is one benchmark's part of docs/benchmarks.md: bench/run puts
// its text between the lines "<!-- bench:NAME -->" and
// "<!-- /bench:NAME -->". A benchmark fills it while it prints its
// figures and writes it to the file its -md flag names.
type Section struct {
	Name string
	b    strings.Builder
}

// NewSection starts the section of benchmark name with the line that
// says what was measured: the date, the build of bin (its commit from
// Go's build information, "+dirty" for a modified tree), the machine, its
// load when the section begins (some benchmarks begin it after their run)
// and the number of runs.
func NewSection(name, bin string, runs int) *Section {
	s := &Section{Name: name}
	s.Printf("Measured %s, build %s, %s, load average %s (1, 5, 15 min) when this section began, %d runs.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), BuildID(bin), Machine(), LoadAvg(), runs)
	return s
}

// Printf appends formatted text.
func (s *Section) Printf(format string, a ...any) { fmt.Fprintf(&s.b, format, a...) }

// Table appends a markdown table and an empty line after it.
func (s *Section) Table(header []string, rows [][]string) {
	s.Printf("| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	for _, r := range rows {
		s.Printf("| %s |\n", strings.Join(r, " | "))
	}
	s.Printf("\n")
}

// String is the section's text.
func (s *Section) String() string { return s.b.String() }

// Write writes the section to path; nothing for an empty path.
func (s *Section) Write(path string) error {
	if path == "" {
		return nil
	}
	return os.WriteFile(path, []byte(s.String()), 0o644)
}

// BuildID is the commit bin was built from (go build -buildvcs=true; first 7 hex digits, "+dirty"
// when its tree had changes), "unknown" when bin carries no VCS stamp.
func BuildID(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if modified == "true" {
		rev += "+dirty"
	}
	return rev
}

// Machine describes the host: cores, memory and kernel.
func Machine() string {
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib int
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				fmt.Sscan(strings.TrimPrefix(l, "MemTotal:"), &kib)
			}
		}
		mem = fmt.Sprintf("%.0f GiB", float64(kib)/(1<<20))
	}
	kernel := "?"
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		kernel = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%d cores, %s, Linux %s", runtime.NumCPU(), mem, kernel)
}

// Ms formats a duration in milliseconds with one decimal.
func Ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// Secs formats a duration in seconds with two decimals.
func Secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// Spread is "median (p10–p90 lo–hi, min–max lo–hi)" of s formatted by f;
// with fewer than 10 values only min–max, which is then the whole spread.
func Spread[T number](s []T, f func(T) string) string {
	lo, hi := MinMax(s)
	if len(s) < 10 {
		return fmt.Sprintf("%s (min–max %s–%s)", f(Median(s)), f(lo), f(hi))
	}
	return fmt.Sprintf("%s (p10–p90 %s–%s, min–max %s–%s)", f(Median(s)), f(Percentile(s, 10)), f(Percentile(s, 90)), f(lo), f(hi))
}
