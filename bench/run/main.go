// Command run runs every vmpod benchmark at HEAD and rewrites their tables
// in docs/benchmarks.md.
//
// It builds vmpod from the working tree into bin/vmpod with -buildvcs=true
// (the binary carries its commit; a modified tree is measured as
// "+dirty"), builds the old
// build bench/stats compares against in a temporary local clone, then
// runs each benchmark one after the other with -md, each writing its
// section: the build, date, machine, load, number of runs, and its tables
// with medians and spreads. Each section replaces the text between
// "<!-- bench:NAME -->" and "<!-- /bench:NAME -->" in the docs; a
// benchmark that fails leaves its section as it was and makes run exit 1
// after the others ran. Nothing else in the docs changes.
//
// Usage (root, libvirtd running, the test guest built; about an hour on an
// idle 2-core machine under TCG, 20 minutes of it in density):
//
//	go run ./bench/run                   # every benchmark
//	go run ./bench/run -only pull,boot   # some
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// benchmarks are run in this order; args are added after -md FILE, with
// {vmpod}, {guest} and {old} substituted.
var benchmarks = []struct {
	name string
	args []string
}{
	{"pull", []string{"-vmpod", "{vmpod}"}},
	{"pulloci", []string{"-vmpod", "{vmpod}"}},
	{"boot", []string{"-vmpod", "{vmpod}", "-guest", "{guest}"}},
	{"warmstart", []string{"-vmpod", "{vmpod}", "-guest", "{guest}"}},
	{"net", []string{"-vmpod", "{vmpod}", "-guest", "{guest}"}},
	{"exec", []string{"-vmpod", "{vmpod}", "-guest", "{guest}"}},
	{"stats", []string{"-new", "{vmpod}", "-old", "{old}", "-guest", "{guest}"}},
	{"overhead", []string{"-vmpod", "{vmpod}", "-guest", "{guest}"}},
	{"density", []string{"-vmpod", "{vmpod}", "-guest", "{guest}"}},
}

func main() {
	only := flag.String("only", "", "comma-separated benchmarks to run (default: all)")
	guest := flag.String("guest", "tests/e2e/images/out/vmpod-test-guest.qcow2", "the test guest image (tests/e2e/images/build-guest.sh builds it)")
	docs := flag.String("docs", "docs/benchmarks.md", "the file whose sections are rewritten")
	statsOld := flag.String("stats-old", "e0d5122^1", "the commit bench/stats compares against (main before the stats collector)")
	flag.Parse()

	want := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	known := map[string]bool{}
	for _, b := range benchmarks {
		known[b.name] = true
	}
	for n := range want {
		if !known[n] {
			fatalf("-only: no benchmark %q", n)
		}
	}
	run := func(name string) bool { return len(want) == 0 || want[name] }

	if _, err := os.Stat(*guest); err != nil && (run("boot") || run("warmstart") || run("net") || run("exec") || run("stats") || run("overhead") || run("density")) {
		fatalf("the test guest: %v (build it with tests/e2e/images/build-guest.sh %s)", err, *guest)
	}
	guestAbs, _ := filepath.Abs(*guest)
	work, err := os.MkdirTemp("", "vmpod-bench-run-")
	check(err)
	defer os.RemoveAll(work)

	if out, _ := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); len(out) > 0 {
		fmt.Println("bench/run: the working tree has changes; the build is measured as +dirty")
	}
	vmpod, err := filepath.Abs("bin/vmpod")
	check(err)
	step("building vmpod", "go", "build", "-buildvcs=true", "-o", vmpod, "./cmd/vmpod")
	old := filepath.Join(work, "vmpod-old")
	if run("stats") {
		// A local clone, not a worktree: go stamps no VCS revision in a
		// worktree's build here.
		tree := filepath.Join(work, "old-tree")
		step("cloning for "+*statsOld, "git", "clone", "-q", "--shared", "--no-checkout", ".", tree)
		rev, err := exec.Command("git", "rev-parse", *statsOld).Output()
		check(err)
		step("checking out "+*statsOld, "git", "-C", tree, "checkout", "-q", "--detach", strings.TrimSpace(string(rev)))
		cmd := exec.Command("go", "build", "-buildvcs=true", "-o", old, "./cmd/vmpod")
		cmd.Dir = tree
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		check(cmd.Run())
	}

	sections := map[string]string{}
	var failed []string
	t0 := time.Now()
	for _, b := range benchmarks {
		if !run(b.name) {
			continue
		}
		md := filepath.Join(work, b.name+".md")
		args := []string{"run", "./bench/" + b.name, "-md", md}
		for _, a := range b.args {
			a = strings.NewReplacer("{vmpod}", vmpod, "{guest}", guestAbs, "{old}", old).Replace(a)
			args = append(args, a)
		}
		fmt.Printf("\n==== bench/%s: go %s (%s)\n", b.name, strings.Join(args, " "), time.Now().UTC().Format("15:04:05"))
		s := time.Now()
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		fmt.Printf("==== bench/%s: %s in %s\n", b.name, result(err), time.Since(s).Round(time.Second))
		if err != nil {
			failed = append(failed, b.name)
			continue
		}
		text, err := os.ReadFile(md)
		if err != nil {
			failed = append(failed, b.name)
			fmt.Printf("==== bench/%s wrote no section: %v\n", b.name, err)
			continue
		}
		sections[b.name] = string(text)
	}
	doc, err := os.ReadFile(*docs)
	check(err)
	out, err := Replace(string(doc), sections)
	check(err)
	check(os.WriteFile(*docs, []byte(out), 0o644))
	fmt.Printf("\nbench/run: %d sections of %s rewritten in %s", len(sections), *docs, time.Since(t0).Round(time.Second))
	if len(failed) > 0 {
		fmt.Printf("; failed, their sections unchanged: %s\n", strings.Join(failed, ", "))
		os.Exit(1)
	}
	fmt.Println()
}

// Replace puts each section's text between its markers in doc. A section
// whose markers are missing, doubled or out of order is an error, and doc
// is then not changed at all.
func Replace(doc string, sections map[string]string) (string, error) {
	for name, text := range sections {
		begin, end := "<!-- bench:"+name+" -->\n", "<!-- /bench:"+name+" -->"
		i, j := strings.Index(doc, begin), strings.Index(doc, end)
		if i < 0 || j < 0 {
			return "", fmt.Errorf("%s has no %q … %q pair", name, strings.TrimSpace(begin), end)
		}
		if strings.Count(doc, begin) != 1 || strings.Count(doc, end) != 1 || j < i {
			return "", fmt.Errorf("the markers of %s are doubled or out of order", name)
		}
		if !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		doc = doc[:i+len(begin)] + text + doc[j:]
	}
	return doc, nil
}

func step(what string, name string, args ...string) {
	fmt.Printf("bench/run: %s\n", what)
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	check(cmd.Run())
}

func result(err error) string {
	if err != nil {
		return "FAILED (" + err.Error() + ")"
	}
	return "done"
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/run: "+format+"\n", args...)
	os.Exit(1)
}
