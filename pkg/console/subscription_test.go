package console

import (
	"io"
	"testing"
)

func TestSubscriptionDropsOldest(t *testing.T) {
	tests := []struct {
		name        string
		pushes      []string
		want        string
		wantDropped uint64
	}{
		{name: "fits", pushes: []string{"ab", "cd"}, want: "abcd"},
		{name: "overflow drops oldest", pushes: []string{"abc", "de"}, want: "bcde", wantDropped: 1},
		{name: "one push larger than the buffer", pushes: []string{"abcdefg"}, want: "defg", wantDropped: 3},
		{name: "large push replaces queued", pushes: []string{"ab", "cdefgh"}, want: "efgh", wantDropped: 4},
		{name: "many small", pushes: []string{"a", "b", "c", "d", "e", "f"}, want: "cdef", wantDropped: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSubscription(nil, 4)
			for _, p := range tt.pushes {
				s.push([]byte(p))
			}
			s.end()
			got, err := io.ReadAll(s)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
			if d := s.Dropped(); d != tt.wantDropped {
				t.Errorf("Dropped() = %d, want %d", d, tt.wantDropped)
			}
		})
	}
}

func TestSubscriptionSmallReads(t *testing.T) {
	s := newSubscription(nil, 16)
	s.push([]byte("hello"))
	p := make([]byte, 2)
	var got []byte
	for range 3 {
		n, err := s.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p[:n]...)
	}
	s.push([]byte("!"))
	s.end()
	rest, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(got) + string(rest); got != "hello!" {
		t.Errorf("read %q, want %q", got, "hello!")
	}
	s.push([]byte("late"))
	if n, err := s.Read(p); n != 0 || err != io.EOF {
		t.Errorf("Read after end = %d, %v; want 0, io.EOF", n, err)
	}
}
