package measure

import (
	"math"
	"slices"
)

// number is what the statistics take: durations, KiB, counts.
type number interface{ ~int | ~int64 }

// Median is the middle value of s, the mean of the two middle values for
// an even count; 0 for none.
func Median[T number](s []T) T {
	if len(s) == 0 {
		return 0
	}
	s = slices.Sorted(slices.Values(s))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Percentile is the nearest-rank p-th percentile of s (0 < p <= 100): the
// smallest value with at least p percent of the values at or below it, so
// always one of the values. Percentile(s, 100) is the maximum; for an even
// count Percentile(s, 50) is the lower middle value, where Median takes the
// mean of the two. 0 for none. Every benchmark's p50, p99 and max come
// from here.
func Percentile[T number](s []T, p float64) T {
	if len(s) == 0 {
		return 0
	}
	s = slices.Sorted(slices.Values(s))
	// p*n/100 rather than p/100*n: exact for whole p, where 0.28*25 is
	// 7.000000000000001 and would round up a rank.
	rank := int(math.Ceil(p * float64(len(s)) / 100))
	return s[max(0, min(rank, len(s))-1)]
}

// MinMax is the spread of s: its smallest and largest value; 0, 0 for
// none.
func MinMax[T number](s []T) (lo, hi T) {
	if len(s) == 0 {
		return 0, 0
	}
	return slices.Min(s), slices.Max(s)
}
