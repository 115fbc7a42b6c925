package measure

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// MixedQcow2 returns the path of a qcow2 of sizeMiB MiB of compressible
// data in work, making it the first time. The data is the same on every
// machine (a seeded generator): 64 KiB blocks, 45% of them random bytes
// (compressed files, encrypted data), 30% text (words of a 5000-word
// vocabulary, Zipf-distributed, in lines), 25% nearly empty (zeros with a
// short record every 4 KiB, as in file system metadata). gzip -6
// compresses it to about 55% and inflates it about as slowly as binaries
// and libraries (about 150 MiB/s for GNU gzip, 230 MiB/s for Go's
// pgzip on the CI machine kind), so decompression costs what it costs
// with a real disk. No block is all zeros, so the qcow2 is as large as
// the disk.
func MixedQcow2(work string, sizeMiB int) (string, error) {
	img := filepath.Join(work, fmt.Sprintf("bench-mixed-%dm.qcow2", sizeMiB))
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	raw := filepath.Join(work, "bench-mixed.raw")
	defer os.Remove(raw)
	fmt.Printf("making a %d MiB qcow2 of compressible data (once)...\n", sizeMiB)
	f, err := os.Create(raw)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	writeMixed(w, int64(sizeMiB)<<20)
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	tmp := img + ".tmp"
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu-img convert: %v: %s", err, out)
	}
	return img, os.Rename(tmp, img)
}

// writeMixed writes size bytes (a multiple of 64 KiB) of MixedQcow2's mix.
func writeMixed(w *bufio.Writer, size int64) {
	r := rand.New(rand.NewPCG(17, 3))
	vocab := make([]string, 5000)
	for i := range vocab {
		b := make([]byte, 2+r.IntN(9))
		for j := range b {
			b[j] = byte('a' + r.IntN(26))
		}
		vocab[i] = string(b)
	}
	zipf := rand.NewZipf(r, 1.1, 2, uint64(len(vocab)-1))
	const blk = 64 << 10
	buf := make([]byte, blk)
	for off := int64(0); off < size; off += blk {
		switch p := r.Float64(); {
		case p < 0.45:
			for i := 0; i < blk; i += 8 {
				v := r.Uint64()
				for k := range 8 {
					buf[i+k] = byte(v >> (8 * k))
				}
			}
		case p < 0.75:
			for i := 0; i < blk; {
				i += copy(buf[i:], vocab[zipf.Uint64()])
				if i < blk {
					buf[i] = ' '
					if r.IntN(12) == 0 {
						buf[i] = '\n'
					}
					i++
				}
			}
		default:
			clear(buf)
			for i := 0; i < blk; i += 4096 {
				copy(buf[i:], fmt.Sprintf("%016x inode %d gen %d", off+int64(i), r.IntN(1<<20), r.Uint32()))
			}
		}
		w.Write(buf)
	}
}

// Pipeline runs script with bash -o pipefail (set -e too) and returns how
// long it took; its standard error is in the error.
func Pipeline(script string) (time.Duration, error) {
	cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", script)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %v: %s", script, err, out)
	}
	return d, nil
}
