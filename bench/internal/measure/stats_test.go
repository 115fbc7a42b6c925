package measure

import (
	"testing"
	"time"
)

func TestStatistics(t *testing.T) {
	ten := []int{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 1..100, reversed
	}
	for _, tc := range []struct {
		name     string
		s        []int
		median   int
		p        float64
		pct      int
		min, max int
	}{
		{"none", nil, 0, 99, 0, 0, 0},
		{"one", []int{7}, 7, 1, 7, 7, 7},
		{"odd", []int{3, 1, 2}, 2, 50, 2, 1, 3},
		{"even: median is the mean of the middle two, p50 the lower", []int{4, 1, 3, 2}, 2, 50, 2, 1, 4},
		{"even: p51 is the upper middle", []int{4, 1, 3, 2}, 2, 51, 3, 1, 4},
		{"p100 is the maximum", ten, 5, 100, 10, 1, 10},
		{"p99 of 10 is the maximum", ten, 5, 99, 10, 1, 10},
		{"p90 of 10", ten, 5, 90, 9, 1, 10},
		{"p0 is the minimum", ten, 5, 0, 1, 1, 10},
		{"p99 of 100", hundred, 50, 99, 99, 1, 100},
		{"p28 of 25 is rank 7", hundred[75:], 13, 28, 7, 1, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]int(nil), tc.s...)
			if got := Median(tc.s); got != tc.median {
				t.Errorf("Median = %d, want %d", got, tc.median)
			}
			if got := Percentile(tc.s, tc.p); got != tc.pct {
				t.Errorf("Percentile(%v) = %d, want %d", tc.p, got, tc.pct)
			}
			if lo, hi := MinMax(tc.s); lo != tc.min || hi != tc.max {
				t.Errorf("MinMax = %d, %d, want %d, %d", lo, hi, tc.min, tc.max)
			}
			for i := range in {
				if in[i] != tc.s[i] {
					t.Fatalf("the input was reordered: %v", tc.s)
				}
			}
		})
	}
	ds := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	if got := Median(ds); got != 2500*time.Microsecond {
		t.Errorf("Median of durations = %v, want 2.5ms", got)
	}
}
