package router

import (
	"fmt"
	"testing"
)

func TestRouteCacheIsBounded(t *testing.T) {
	c := newRouteCache(3)
	b := &backend{name: "vmpod"}
	for i := range 10 {
		c.put(fmt.Sprint(i), b)
	}
	if n := c.len(); n != 3 {
		t.Fatalf("cache holds %d entries, want at most 3", n)
	}
	c.put("x", b)
	if c.get("x") != b {
		t.Error("the newest entry was evicted")
	}
	c.forget("x")
	if c.get("x") != nil {
		t.Error("forget left the entry")
	}
}
