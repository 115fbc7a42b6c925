package cni

import (
	"sync"
	"time"
)

// Timing is how long the last network setup or teardown took: vmpod's own
// work (netns, wiring, taps) apart from the CNI plugins' time.
type Timing struct {
	Own, Plugins time.Duration
}

type timings struct {
	mu   sync.Mutex
	last map[string]Timing
}

func newTimings() *timings { return &timings{last: map[string]Timing{}} }

func (t *timings) record(op string, own, plugins time.Duration) {
	t.mu.Lock()
	t.last[op] = Timing{Own: own, Plugins: plugins}
	t.mu.Unlock()
}

// LastTiming returns the timing of the last "setup" or "teardown".
func (m *Manager) LastTiming(op string) Timing {
	m.timing.mu.Lock()
	defer m.timing.mu.Unlock()
	return m.timing.last[op]
}
