package measure

import (
	"os"
	"testing"
	"time"
)

func TestCPUTime(t *testing.T) {
	// Burn a little CPU so this process's time is above 0.
	for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
	}
	if got := CPUTime(os.Getpid()); got <= 0 {
		t.Fatalf("CPUTime(self) = %v", got)
	}
	if got := CPUTime(-1); got != 0 {
		t.Fatalf("CPUTime(-1) = %v, want 0", got)
	}
}
