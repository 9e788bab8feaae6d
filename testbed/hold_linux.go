package testbed

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Held is a set of idle connections from the client namespace to the VIP,
// held by holdconns processes.
type Held struct {
	procs   []*exec.Cmd
	stdins  []io.Closer
	held    int
	Failed  int           // connects that failed
	Elapsed time.Duration // to open them all
}

// Len is the number of established connections held.
func (h *Held) Len() int { return h.held }

// Close resets every connection (SO_LINGER 0: the gateway forgets the flow
// at once) and waits for the holders to exit.
func (h *Held) Close() {
	for _, in := range h.stdins {
		in.Close()
	}
	for _, p := range h.procs {
		_ = p.Wait()
	}
	h.procs, h.stdins = nil, nil
}

// HoldSourceBase is the first of the extra client addresses HoldConnections
// connects from.
const HoldSourceBase = "10.77.1.10"

// holdPerProc is what one holdconns process opens: under the file limit an
// unprivileged-for-resources root gets here (20000), which no process may
// raise.
const holdPerProc = 15000

// HoldConnections opens n TCP connections from the client namespace to
// VIP:Port and keeps them open without sending anything, until Close. They
// are spread over holdconns processes with an extra client address each
// (HoldSourceBase on, added to the client's interface once per bed).
func (b *Bed) HoldConnections(n int, timeout time.Duration) (*Held, error) {
	bin := b.tool("holdconns", "./testbed/holdconns")
	h := &Held{}
	start := time.Now()
	src := netip.MustParseAddr(HoldSourceBase)
	addrs, err := b.Output(b.Client(), "ip", "-br", "addr", "show", "dev", "eth0")
	if err != nil {
		return nil, err
	}
	var outs []*bufio.Reader
	for left := n; left > 0; left -= holdPerProc {
		if !strings.Contains(addrs, " "+src.String()+"/24") {
			if err := b.Run(b.Client(), "ip", "addr", "add", src.String()+"/24", "dev", "eth0"); err != nil {
				h.Close()
				return nil, err
			}
		}
		cmd := b.Cmd(b.Client(), bin, "-src", src.String(), "-dst", VIP+":"+strconv.Itoa(Port),
			"-n", strconv.Itoa(min(left, holdPerProc)), "-timeout", timeout.String())
		in, err1 := cmd.StdinPipe()
		out, err2 := cmd.StdoutPipe()
		if err1 != nil || err2 != nil {
			h.Close()
			return nil, fmt.Errorf("holdconns pipes: %v %v", err1, err2)
		}
		if err := cmd.Start(); err != nil {
			h.Close()
			return nil, fmt.Errorf("starting holdconns: %w", err)
		}
		h.procs, h.stdins = append(h.procs, cmd), append(h.stdins, in)
		outs = append(outs, bufio.NewReader(out))
		src = src.Next()
	}
	var firstErr string
	for i, out := range outs {
		line, err := out.ReadString('\n')
		var held, failed, msec int
		var msg string
		if _, serr := fmt.Sscanf(line, "held %d failed %d ms %d err %s", &held, &failed, &msec, &msg); err != nil || serr != nil {
			h.Close()
			return h, fmt.Errorf("holdconns #%d: %q: %v %v", i, line, err, serr)
		}
		h.held += held
		h.Failed += failed
		if failed > 0 && firstErr == "" {
			_, firstErr, _ = strings.Cut(strings.TrimSpace(line), " err ")
		}
	}
	h.Elapsed = time.Since(start)
	if h.held < n {
		return h, fmt.Errorf("held %d of %d connections after %v (%d failed; first error: %s)", h.held, n, h.Elapsed, h.Failed, firstErr)
	}
	return h, nil
}
