package measure

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"
)

// Contender is one way of doing a benchmark's work (vmpod, or a baseline
// doing the same work), and its figures.
type Contender struct {
	Name  string // for the tables
	Short string // for the per-run lines
	Run   func() time.Duration
	Times []time.Duration
	// RSS, HWM and Anon are vmpod's after each run (KiB), for contenders
	// that are a vmpod (RecordProc).
	RSS, HWM, Anon []int
}

// Interleave runs every contender runs times, the order rotating from run
// to run, with before (when not nil) ahead of each, and prints a line per
// run.
func Interleave(cs []*Contender, runs int, before func()) {
	for i := 0; i < runs; i++ {
		fmt.Printf("run %d:", i+1)
		for j := range cs {
			c := cs[(i+j)%len(cs)]
			if before != nil {
				before()
			}
			d := c.Run()
			c.Times = append(c.Times, d)
			fmt.Printf("  %s %.2fs", c.Short, d.Seconds())
		}
		fmt.Println()
	}
}

// Ratio is c's median over base's, with the spread of the runs' own
// ratios (each run measured both).
func Ratio(base, c *Contender) string {
	var per []int // per mille
	for i := range c.Times {
		per = append(per, int(1000*c.Times[i].Seconds()/base.Times[i].Seconds()))
	}
	lo, hi := MinMax(per)
	return fmt.Sprintf("%.2f (runs %.2f–%.2f)", Median(c.Times).Seconds()/Median(base.Times).Seconds(),
		float64(lo)/1000, float64(hi)/1000)
}

// RecordProc adds process pid's memory figures to c's.
func (c *Contender) RecordProc(pid int) error {
	p, err := ReadProc(pid)
	if err != nil {
		return err
	}
	c.RSS, c.HWM, c.Anon = append(c.RSS, p.RSS), append(c.HWM, p.HWM), append(c.Anon, p.Anon)
	return nil
}

// Mem is the median of c's memory figures, in words.
func (c *Contender) Mem() string {
	return fmt.Sprintf("%.1f MiB, %.1f MiB of it anonymous (peak during the pull %.1f MiB)",
		float64(Median(c.RSS))/1024, float64(Median(c.Anon))/1024, float64(Median(c.HWM))/1024)
}

// FileDigest is the sha256 of a file, in hex.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
