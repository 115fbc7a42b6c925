package image

import (
	"context"
	"strings"
	"testing"
)

func TestUsageCountsStoreOnly(t *testing.T) {
	srv := newServer(t)
	srv.put("/big.qcow2", fakeQcow2(strings.Repeat("y", 256<<10)))
	s, _ := newStore(t, mapTranslator{"big": srv.URL + "/big.qcow2"})
	before, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), "big", nil); err != nil {
		t.Fatal(err)
	}
	after, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if after.UsedBytes < before.UsedBytes+256<<10 || after.Inodes != before.Inodes+1 {
		t.Fatalf("usage before %+v after %+v", before, after)
	}
}
