// Package guesttest is a fake QEMU guest agent for tests of code that runs
// commands in a VM (pkg/guest and its users): a table of commands, fake
// processes, and a player for the guest side of TTY execs.
package guesttest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Guest is a QEMU guest agent that "runs" argv by a table: each
// command finishes after its duration with the given outputs. Besides:
// cat echoes its input-data; kill -9 PID and the shell's kill -9 -PID kill
// a fake process (it then reports signal 9); setsid runs tty, when set, as
// the guest side of a TTY exec. Like qemu-ga, it forgets a process once
// guest-exec-status reported its exit.
type Guest struct {
	mu    sync.Mutex
	procs map[int]*proc
	next  int
	argvs [][]string
	// TTY, when set, plays a TTY exec wrapper (argv from setsid on) to its end and
	// returns its exit code and stderr.
	TTY func(argv []string) (code int, stderr string)
	// cmd is the container's command of this boot (command.go).
	cmd commandState
}

type proc struct {
	argv   []string
	env    []string
	input  []byte
	start  time.Time
	exit   *int   // set when a played process (setsid, the command) ended
	out    string // its stdout
	errOut string // its stderr
	signal *int   // set when killed
}

// Result is how a command of Commands ends.
type Result struct {
	Out, Err string
	Code     int
	After    time.Duration
}

// BigOutput is the size of the output of the command "bigoutput".
const BigOutput = 1<<20 + 10

// Commands are the commands the fake knows by argv[0]; others exit 127.
var Commands = map[string]Result{
	"hostname":  {Out: "vm-host\n"},
	"exit3":     {Code: 3},
	"both":      {Out: "to-stdout\n", Err: "to-stderr\n"},
	"sleep":     {After: time.Hour},
	"bigoutput": {Out: strings.Repeat("x", BigOutput)},
	"kill":      {},
	"sh":        {}, // the kill and stty helpers
}

func New() *Guest { return &Guest{procs: map[int]*proc{}} }

// LastArgv is the argv of the last guest-exec.
func (g *Guest) LastArgv() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.argvs[len(g.argvs)-1]
}

// LastPID is the pid of the last guest-exec.
func (g *Guest) LastPID() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.next
}

// Killed reports whether process pid was killed.
func (g *Guest) Killed(pid int) bool {
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

// Run returns the argvs run so far whose first word is name.
func (g *Guest) Run(name string) [][]string {
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

// Answer is the agent: give it to the libvirt fake (SetAgent).
func (g *Guest) Answer(domain, command string) (string, error) {
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
	case "guest-ping":
		return `{"return":{}}`, nil
	case "guest-exec":
		var a struct {
			Path      string   `json:"path"`
			Arg       []string `json:"arg"`
			InputData string   `json:"input-data"`
			Env       []string `json:"env"`
		}
		json.Unmarshal(req.Arguments, &a)
		input, err := base64.StdEncoding.DecodeString(a.InputData)
		if err != nil {
			return "", err
		}
		argv := append([]string{a.Path}, a.Arg...)
		g.next++
		p := &proc{argv: argv, env: a.Env, input: input, start: time.Now()}
		g.procs[g.next] = p
		g.argvs = append(g.argvs, argv)
		g.kill(argv)
		g.playCommand(g.next, p)
		if play := g.TTY; argv[0] == "setsid" && play != nil {
			go func() {
				code, stderr := play(argv)
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
			return exited(*p.exit, p.out, p.errOut)
		case isCommand(p.argv):
			return `{"return":{"exited":false}}`, nil
		case p.argv[0] == "setsid":
			if g.TTY == nil {
				return exited(127, "", "setsid: not found\n")
			}
			return `{"return":{"exited":false}}`, nil
		case p.argv[0] == "cat":
			return exited(0, string(p.input), "")
		}
		r, ok := Commands[p.argv[0]]
		if !ok {
			r = Result{Code: 127, Err: "not found\n"}
		}
		if time.Since(p.start) < r.After {
			return `{"return":{"exited":false}}`, nil
		}
		return exited(r.Code, r.Out, r.Err)
	}
	return "", fmt.Errorf("unknown command %s", req.Execute)
}

// kill applies a kill command to the fake processes (g.mu held).
func (g *Guest) kill(argv []string) {
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

// SetsidPID is the pid of the last TTY exec wrapper (0: none).
func (g *Guest) SetsidPID() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.argvs) - 1; i >= 0; i-- {
		if g.argvs[i][0] == "setsid" {
			return i + 1
		}
	}
	return 0
}
