package guesttest

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TTYPlayer plays the guest side of TTY execs: it listens on the VM's exec
// sockets as QEMU does and, when the fake agent runs the wrapper, talks
// its protocol on that port: a begin line (after some noise), the terminal
// name, then a line "shell" that echoes each line and ends on "exit N"
// or ^D.
type TTYPlayer struct {
	conns []chan net.Conn
	// Inner receives the inner command of each wrapper the guest runs.
	Inner chan string
	// NoStart makes the wrapper fail as if it could not open its port.
	NoStart atomic.Bool
}

// NewTTYPlayer listens on sockets (exec channel n at sockets[n]) and
// installs itself as g's TTY.
func NewTTYPlayer(t testing.TB, sockets []string, g *Guest) *TTYPlayer {
	tg := &TTYPlayer{Inner: make(chan string, 10)}
	for _, sock := range sockets {
		conns := make(chan net.Conn, 1)
		tg.conns = append(tg.conns, conns)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() })
				conns <- c
			}
		}()
	}
	g.mu.Lock()
	g.TTY = tg.play
	g.mu.Unlock()
	return tg
}

// play runs one wrapper: argv is setsid sh -c WRAPPER vmpod-exec DEVICE
// NONCE INNER; the port number is the device's last character.
func (tg *TTYPlayer) play(argv []string) (int, string) {
	if len(argv) != 8 || argv[0] != "setsid" || argv[4] != "vmpod-exec" {
		return 2, fmt.Sprintf("bad wrapper argv %q", argv)
	}
	port, nonce := argv[5], argv[6]
	if tg.NoStart.Load() {
		return 2, "sh: can't open '" + port + "': No such file or directory\n"
	}
	tg.Inner <- argv[7]
	n, _ := strconv.Atoi(port[len(port)-1:])
	if n >= len(tg.conns) {
		return 2, "no such port " + port
	}
	var conn net.Conn
	select {
	case conn = <-tg.conns[n]:
	case <-time.After(5 * time.Second):
		return 2, "no host on " + port
	}
	fmt.Fprintf(conn, "noise\x1e%s:begin\n", nonce)
	fmt.Fprintf(conn, "\x1e%s:tty=/dev/pts/7\r\n# ", nonce)
	r := bufio.NewReader(conn)
	var line []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 129, "" // hung up
		}
		switch {
		case b == 0x04 && len(line) == 0:
			fmt.Fprintf(conn, "\x1e%s:end:0\n", nonce)
			return 0, ""
		case b == '\n':
			fmt.Fprintf(conn, "%s\r\n", line)
			if code, ok := strings.CutPrefix(string(line), "exit "); ok {
				c, _ := strconv.Atoi(code)
				fmt.Fprintf(conn, "\x1e%s:end:%d\n", nonce, c)
				return c, ""
			}
			conn.Write([]byte("# "))
			line = line[:0]
		default:
			line = append(line, b)
		}
	}
}
