package main

import (
	"fmt"
	"time"
)

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// msf formats a short duration in milliseconds with a decimal.
func msf(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func signedMs(d time.Duration) string {
	return fmt.Sprintf("%+.0f ms", float64(d)/float64(time.Millisecond))
}

func mib(kib int) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// met says whether a target was met; a benchmark reports, it never fails.
func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
