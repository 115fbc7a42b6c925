package measure

import (
	"testing"
	"time"
)

func TestInterleaveAndRatio(t *testing.T) {
	var order []string
	mk := func(name string, d time.Duration) *Contender {
		return &Contender{Name: name, Short: name, Run: func() time.Duration { order = append(order, name); return d }}
	}
	base, c := mk("base", 2*time.Second), mk("c", time.Second)
	befores := 0
	Interleave([]*Contender{base, c}, 3, func() { befores++ })
	if want := []string{"base", "c", "c", "base", "base", "c"}; len(order) != len(want) || befores != 6 {
		t.Fatalf("runs %v with %d befores, want %v with 6", order, befores, want)
	} else {
		for i := range want {
			if order[i] != want[i] {
				t.Fatalf("runs %v, want %v (the order rotating)", order, want)
			}
		}
	}
	if len(base.Times) != 3 || len(c.Times) != 3 {
		t.Fatalf("times %v %v", base.Times, c.Times)
	}
	if got, want := Ratio(base, c), "0.50 (runs 0.50–0.50)"; got != want {
		t.Fatalf("Ratio = %q, want %q", got, want)
	}
}
