package transfer

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Progress counts the bytes of one pull for the periodic log line. Received
// and Written may be updated from any goroutine while Report runs.
type Progress struct {
	// Start is when the pull started; rates are measured from it.
	Start time.Time
	// Total is the number of bytes expected, or <= 0 when unknown.
	Total int64
	// Received counts the bytes read from the network so far.
	Received atomic.Int64
	// Written counts the bytes written to the disk file, when they are not
	// the bytes received (a registry pull decompresses layers); logged as
	// disk_bytes when TrackWritten is set.
	Written      atomic.Int64
	TrackWritten bool
}

// Report logs the progress at info level every interval until stop is
// called; stop returns once the reporting goroutine has ended.
func (p *Progress) Report(log *slog.Logger, interval time.Duration) (stop func()) {
	t := time.NewTicker(interval)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				log.Info("pull progress", p.attrs()...)
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// attrs are the attributes of one progress line.
func (p *Progress) attrs() []any {
	n := p.Received.Load()
	attrs := []any{"bytes", n}
	if p.Total > 0 {
		attrs = append(attrs, "bytes_total", p.Total, "percent", fmt.Sprintf("%.1f", float64(n)*100/float64(p.Total)))
	}
	if p.TrackWritten {
		attrs = append(attrs, "disk_bytes", p.Written.Load())
	}
	return append(attrs, "rate_mib_s", Rate(n, time.Since(p.Start)))
}

// Rate formats n bytes in d as MiB/s with one decimal, for the rate_mib_s
// log key.
func Rate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(n)/(1<<20)/max(d.Seconds(), 1e-3))
}
