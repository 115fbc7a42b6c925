package cri

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fakeGuest is a QEMU guest agent that "runs" argv by a table: each
// command finishes after its duration with the given outputs. Besides:
// cat echoes its input-data; kill -9 PID and the shell's kill -9 -PID kill
// a fake process (it then reports signal 9); setsid runs tty, when set, as
// the guest side of a TTY exec. Like qemu-ga, it forgets a process once
// guest-exec-status reported its exit.
type fakeGuest struct {
	mu    sync.Mutex
	procs map[int]*fakeProc
	next  int
	argvs [][]string
	// tty plays a TTY exec wrapper (argv from setsid on) to its end and
	// returns its exit code and stderr.
	tty func(argv []string) (code int, stderr string)
}

type fakeProc struct {
	argv   []string
	input  []byte
	start  time.Time
	exit   *int   // set when a played process (setsid) ended
	errOut string // its stderr
	signal *int   // set when killed
}

type fakeResult struct {
	out, err string
	code     int
	after    time.Duration
}

var fakeCommands = map[string]fakeResult{
	"hostname":  {out: "vm-host\n"},
	"exit3":     {code: 3},
	"both":      {out: "to-stdout\n", err: "to-stderr\n"},
	"sleep":     {after: time.Hour},
	"bigoutput": {out: strings.Repeat("x", execOutputCap+10)},
	"kill":      {},
	"sh":        {}, // the kill and stty helpers
}

func newFakeGuest() *fakeGuest { return &fakeGuest{procs: map[int]*fakeProc{}} }

func (g *fakeGuest) lastArgv() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.argvs[len(g.argvs)-1]
}

// lastPID is the pid of the last guest-exec.
func (g *fakeGuest) lastPID() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.next
}

// killed reports whether process pid was killed.
func (g *fakeGuest) killed(pid int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, a := range g.argvs {
		if (len(a) == 3 && a[0] == "kill" && a[2] == strconv.Itoa(pid)) ||
			(len(a) == 5 && a[0] == "sh" && a[3] == "vmpod-kill" && a[4] == strconv.Itoa(pid)) {
			return true
		}
	}
	return false
}

// commands returns the argvs run so far whose first word is name.
func (g *fakeGuest) commands(name string) [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out [][]string
	for _, a := range g.argvs {
		if a[0] == name {
			out = append(out, a)
		}
	}
	return out
}

func (g *fakeGuest) answer(domain, command string) (string, error) {
	var req struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(command), &req); err != nil {
		return "", err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch req.Execute {
	case "guest-exec":
		var a guestExecArgs
		json.Unmarshal(req.Arguments, &a)
		input, err := base64.StdEncoding.DecodeString(a.InputData)
		if err != nil {
			return "", err
		}
		argv := append([]string{a.Path}, a.Arg...)
		g.next++
		p := &fakeProc{argv: argv, input: input, start: time.Now()}
		g.procs[g.next] = p
		g.argvs = append(g.argvs, argv)
		g.kill(argv)
		if argv[0] == "setsid" && g.tty != nil {
			go func() {
				code, stderr := g.tty(argv)
				g.mu.Lock()
				p.exit, p.errOut = &code, stderr
				g.mu.Unlock()
			}()
		}
		return fmt.Sprintf(`{"return":{"pid":%d}}`, g.next), nil
	case "guest-exec-status":
		var a struct{ PID int }
		json.Unmarshal(req.Arguments, &a)
		p, ok := g.procs[a.PID]
		if !ok {
			return "", fmt.Errorf("Invalid parameter 'pid'")
		}
		enc := base64.StdEncoding.EncodeToString
		exited := func(code int, out, errOut string) (string, error) {
			delete(g.procs, a.PID)
			return fmt.Sprintf(`{"return":{"exited":true,"exitcode":%d,"out-data":%q,"err-data":%q}}`, code, enc([]byte(out)), enc([]byte(errOut))), nil
		}
		switch {
		case p.signal != nil:
			delete(g.procs, a.PID)
			return fmt.Sprintf(`{"return":{"exited":true,"signal":%d}}`, *p.signal), nil
		case p.exit != nil:
			return exited(*p.exit, "", p.errOut)
		case p.argv[0] == "setsid":
			if g.tty == nil {
				return exited(127, "", "setsid: not found\n")
			}
			return `{"return":{"exited":false}}`, nil
		case p.argv[0] == "cat":
			return exited(0, string(p.input), "")
		}
		r, ok := fakeCommands[p.argv[0]]
		if !ok {
			r = fakeResult{code: 127, err: "not found\n"}
		}
		if time.Since(p.start) < r.after {
			return `{"return":{"exited":false}}`, nil
		}
		return exited(r.code, r.out, r.err)
	}
	return "", fmt.Errorf("unknown command %s", req.Execute)
}

// kill applies a kill command to the fake processes (g.mu held).
func (g *fakeGuest) kill(argv []string) {
	var target string
	switch {
	case len(argv) == 3 && argv[0] == "kill" && argv[1] == "-9":
		target = argv[2]
	case len(argv) == 5 && argv[0] == "sh" && argv[3] == "vmpod-kill":
		target = argv[4]
	default:
		return
	}
	pid, _ := strconv.Atoi(target)
	if p, ok := g.procs[pid]; ok && p.exit == nil {
		nine := 9
		p.signal = &nine
	}
}
