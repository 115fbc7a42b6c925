package lifecycle

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

type testRecord struct {
	N     int
	State string
}

func TestGuardedUpdate(t *testing.T) {
	var stored []testRecord
	var changes []string
	saveErr := error(nil)
	g := &guarded[testRecord]{
		rec: testRecord{N: 1, State: "a"},
		save: func(r testRecord) error {
			if saveErr != nil {
				return saveErr
			}
			stored = append(stored, r)
			return nil
		},
		changed: func(old, new testRecord) { changes = append(changes, fmt.Sprintf("%s->%s", old.State, new.State)) },
	}
	got, err := g.Update(func(r *testRecord) error { r.N, r.State = 2, "b"; return nil })
	if err != nil || got != (testRecord{2, "b"}) || g.Get() != got || len(stored) != 1 || stored[0] != got {
		t.Fatalf("Update = %+v, %v; now %+v, stored %+v", got, err, g.Get(), stored)
	}
	// A change fn refuses leaves the record and the store alone.
	refused := errors.New("no")
	if _, err := g.Update(func(r *testRecord) error { r.N = 99; return refused }); !errors.Is(err, refused) || g.Get().N != 2 || len(stored) != 1 {
		t.Fatalf("refused change: %v, record %+v, %d writes", err, g.Get(), len(stored))
	}
	// A failed write leaves the record as it was: readers never see what
	// was not stored.
	saveErr = errors.New("disk full")
	if _, err := g.Update(func(r *testRecord) error { r.State = "c"; return nil }); err == nil || g.Get().State != "b" {
		t.Fatalf("failed write: %v, record %+v", err, g.Get())
	}
	if len(changes) != 1 || changes[0] != "a->b" {
		t.Fatalf("change hook saw %v, want only the stored change a->b", changes)
	}
}

// TestGuardedConcurrentUpdates: updates serialise (none is lost) and the
// hook sees them in order.
func TestGuardedConcurrentUpdates(t *testing.T) {
	var mu sync.Mutex
	var seen []int
	g := &guarded[testRecord]{
		save:    func(testRecord) error { return nil },
		changed: func(old, new testRecord) { mu.Lock(); seen = append(seen, new.N); mu.Unlock() },
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(2)
		go func() { defer wg.Done(); g.Update(func(r *testRecord) error { r.N++; return nil }) }()
		go func() { defer wg.Done(); _ = g.Get() }()
	}
	wg.Wait()
	if g.Get().N != 50 {
		t.Fatalf("N = %d after 50 increments", g.Get().N)
	}
	for i, n := range seen {
		if n != i+1 {
			t.Fatalf("hook saw %v: out of order", seen)
		}
	}
}
