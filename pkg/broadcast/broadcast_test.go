package broadcast

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestSlowSubscriberIsDisconnected(t *testing.T) {
	b := New[int](2, "number")
	slow, err := b.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	fast, _ := b.Subscribe()
	dropped := 0
	var got []int
	for v := range 5 {
		dropped += b.Publish(v) // never waits, even for the slow one
		got = append(got, <-fast.C())
	}
	if len(got) != 5 || got[4] != 4 {
		t.Fatalf("fast subscriber got %v", got)
	}
	if dropped != 1 {
		t.Fatalf("dropped %d subscribers, want the slow one", dropped)
	}
	<-slow.Done()
	if !errors.Is(slow.Err(), errdefs.ErrResourceExhausted) || !strings.Contains(slow.Err().Error(), "2 numbers behind") {
		t.Fatalf("slow subscriber ended with %v", slow.Err())
	}
	if b.Count() != 1 {
		t.Fatalf("%d subscribers", b.Count())
	}
	fast.Close()
	if b.Count() != 0 {
		t.Fatalf("%d subscribers after Close", b.Count())
	}
}

func TestCloseEndsAndRefuses(t *testing.T) {
	b := New[string](4, "event")
	s, _ := b.Subscribe()
	b.Close()
	<-s.Done()
	if !errors.Is(s.Err(), errdefs.ErrUnavailable) {
		t.Fatalf("subscription ended with %v", s.Err())
	}
	if _, err := b.Subscribe(); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if n := b.Publish("x"); n != 0 {
		t.Fatalf("Publish after Close dropped %d", n)
	}
}
