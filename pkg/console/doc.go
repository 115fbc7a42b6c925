// Package console owns a VM's serial console (ttyS0): the single reader that
// writes what the guest prints to the container's CRI log file and hands the
// same bytes to attached clients (CRI Attach), and the path by which those
// clients' keystrokes reach the guest.
//
// # One reader per VM
//
// The domain's ttyS0 is a libvirt
//
//	<serial type='unix'><source mode='bind' path='SOCK'/></serial>
//
// QEMU listens on the unix socket SOCK and serves one client at a time; a
// second client waits in the listen backlog until the first goes away. So
// vmpod holds exactly one connection per VM, in a Console, and multiplexes
// it: every byte read goes to the log file and to every Subscription, and
// Console.Write forwards input from any attached client. Attaching and
// detaching only add and remove a Subscription; they never touch the
// connection, so they cannot affect the VM. A slow client never holds up the
// log or other clients: its Subscription drops its oldest queued output.
//
// Why not <serial type='pty'>: a pty master read by several processes (the
// logger and each `kubectl attach`) gives each byte to whichever reader
// happens to read first, so every reader sees holes in the output. Nothing
// multiplexes a pty for us; with a socket that takes one client the kernel
// enforces the single reader and this package does the fan-out.
//
// # Lifecycle
//
// Start returns at once; a goroutine dials SOCK every Options.DialRetry until
// it connects (the socket does not exist while the domain is starting, and
// refuses connections when QEMU is gone but the file remains). When QEMU
// closes the connection, which it does when it exits (guest poweroff, domain
// destroyed), the pending partial line is flushed, Done is closed, and the
// goroutine goes back to dialling in case the domain is started again. Close
// stops everything.
//
// After a vmpod restart the VM keeps running; a new Console for the same
// socket and log path connects again (QEMU accepts it because the old
// process's connection died with it) and keeps appending to the same log
// file. QEMU keeps no output for a client that is not connected (only a
// chardev <log file=...>, written by virtlogd, records it), so what the guest
// prints while vmpod is down is missing from the CRI log.
//
// # Log format
//
// The log file uses the CRI container log format the kubelet parses:
//
//	2024-05-01T10:00:00.123456789Z stdout F a complete line
//	2024-05-01T10:00:00.2Z stdout P vm login:
//
// A serial console has one stream, logged as stdout. A line ending in "\n" is
// written as F without the newline and without one "\r" before it (serial
// consoles send "\r\n"). A line still without newline after
// Options.PartialFlush (an interactive prompt) or longer than
// Options.MaxLineLen is written as P, and its remainder follows as further P
// or F lines, which the kubelet concatenates. Bytes are logged as the guest
// sent them. At most one line is held in memory.
//
// # The command's output streams
//
// A container with a command runs it in the guest with its stdout and
// stderr on two virtio-serial ports (pkg/guest), each a unix socket QEMU
// listens on like ttyS0's. Options.Streams names them; the Console reads
// each with one more connection and logs its lines as the stdout and
// stderr streams of the same log file, whole lines per write, so lines of
// different streams never mix. As containerd does, a stream's line is
// logged when its newline comes (or at MaxLineLen, as P), not on a timer,
// and its last line is logged whole (F) when the stream ends: its Filter
// saw the guest's end line, or QEMU closed the connection. OutputEnded
// says when both ended. The console is logged as before, on stdout, but
// every line starts with ConsolePrefix ("[console] ") and is logged only
// once whole, so a shell prompt on the console is never joined to the
// command's next line by a reader that concatenates P lines. A stream
// connects once: while vmpod is down, the guest's writes to the port block
// (virtio-serial holds them while no host side is connected) until the
// next vmpod's Console connects.
package console
