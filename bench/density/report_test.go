package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestFit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		xs, ys []float64
		a, b   float64
	}{
		{"exact line", []float64{0, 25, 50, 75, 100}, []float64{10, 60, 110, 160, 210}, 10, 2},
		{"noise around a line", []float64{0, 1, 2, 3}, []float64{1, 2, 2, 3}, 1.1, 0.6},
		{"one point: no slope", []float64{5}, []float64{7}, 0, 0},
		{"one x: the mean, no slope", []float64{3, 3}, []float64{1, 3}, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := fit(tc.xs, tc.ys)
			if math.Abs(a-tc.a) > 1e-9 || math.Abs(b-tc.b) > 1e-9 {
				t.Fatalf("fit = %v + %v·x, want %v + %v·x", a, b, tc.a, tc.b)
			}
		})
	}
}

func TestCRILogReader(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vm.log")
	write := func(s string) {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	var r criLogReader
	if r.ready(p) {
		t.Fatal("ready before the file exists")
	}
	// The ready line in parts, as a starved guest prints it (from a real
	// log), the file written in pieces that cut a file line.
	write("2026-12-07T13:24:44.5Z stdout F vmpod-test-guest qemu-ga started\n2026-12-07T13:24:49.7Z stdout P v\n2026-12-07T13:24:49.8Z std")
	if r.ready(p) {
		t.Fatal("ready after a partial line")
	}
	write("out F mpod-test-guest ready\n")
	if !r.ready(p) {
		t.Fatal("the ready line in two parts was not found")
	}
	var r2 criLogReader
	write("2026-12-07T13:24:50Z stdout F not vmpod-test-guest\n")
	if !r2.ready(p) {
		t.Fatal("a fresh reader did not find the ready line")
	}
}
