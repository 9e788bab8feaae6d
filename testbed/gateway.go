package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a long-running process the harness started.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string // file holding its stdout and stderr

	done     chan struct{}
	err      error // Wait's result, valid once done is closed
	stopOnce sync.Once
}

func startProc(name string, cmd *exec.Cmd, logPath string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child holds its own copy
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to end and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM, waits up to 5s, then SIGKILLs. It returns the exit
// error unless the process ended on the harness's own signal. Idempotent.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() {
		if p.Exited() {
			return
		}
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
	})
	<-p.done
	if ee, ok := p.err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
			(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
			return nil
		}
	}
	return p.err
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *Proc) Kill() {
	p.stopOnce.Do(func() {
		if !p.Exited() {
			_ = p.Cmd.Process.Kill()
		}
	})
	<-p.done
}

// LogTail is the last n lines of the process's log.
func (p *Proc) LogTail(n int) string { return fileTail(p.Log, n) }

// ControlSocket is the gateway's control socket path.
func (b *Bed) ControlSocket() string { return filepath.Join(b.Dir, "understudy.sock") }

// GatewayArgs are the arguments of "understudy run" for this topology.
func (b *Bed) GatewayArgs() []string {
	return []string{"run",
		"--client-iface", ClientIface, "--server-iface", ServerIface,
		"--vip", VIP, "--port", strconv.Itoa(Port),
		"--primary", PrimaryIP, "--backup", BackupIP,
		"--control", b.ControlSocket()}
}

// StartGateway builds bin/understudy (once per process), runs it in the
// gateway namespace with GatewayArgs plus extraArgs, logging to
// <Dir>/gateway.log, and waits up to 10s for "understudy status --json" to
// answer. It is stopped in t.Cleanup.
func (b *Bed) StartGateway(extraArgs ...string) *Proc {
	b.t.Helper()
	return b.startGateway(true, extraArgs...)
}

// RestartGateway is StartGateway as after a crash: what an earlier run left
// (its control socket, its nftables tables) stays for the new one to find.
func (b *Bed) RestartGateway(extraArgs ...string) *Proc {
	b.t.Helper()
	return b.startGateway(false, extraArgs...)
}

func (b *Bed) startGateway(clean bool, extraArgs ...string) *Proc {
	b.t.Helper()
	bin := binary(b.t, b.Root, "understudy")
	if clean {
		_ = os.Remove(b.ControlSocket())
	}
	cmd := b.Cmd(b.Gateway(), bin, append(b.GatewayArgs(), extraArgs...)...)
	p, err := startProc("understudy", cmd, filepath.Join(b.Dir, "gateway.log"))
	if err != nil {
		b.t.Fatal(err)
	}
	// For scripts/testbed.sh down, should the test binary die first.
	_ = os.WriteFile(filepath.Join(b.Dir, "gateway.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	started := false
	b.t.Cleanup(func() {
		// The bed's own cleanup, which runs next, logs gateway.log on failure.
		if err := p.Stop(); err != nil && started {
			b.t.Errorf("gateway exited with %v", err)
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.StatusJSON()
		if err == nil {
			started = true
			return p
		}
		if p.Exited() {
			b.t.Fatalf("gateway exited during start-up (%v)", p.Wait())
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("gateway status did not answer within 10s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StatusJSON is the output of "understudy status --json".
func (b *Bed) StatusJSON() (json.RawMessage, error) {
	out, err := b.Understudy("status", "--json")
	if err != nil {
		return nil, err
	}
	if !json.Valid([]byte(out)) {
		return nil, fmt.Errorf("understudy status --json printed invalid JSON: %q", out)
	}
	return json.RawMessage(out), nil
}

// Status is "understudy status --json" decoded into a map.
func (b *Bed) Status() (map[string]any, error) {
	raw, err := b.StatusJSON()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("understudy status --json: %w", err)
	}
	return m, nil
}

// Understudy runs "understudy ARGS... --control <the bed's socket>" and
// returns its stdout; the error carries the exit status and stderr.
func (b *Bed) Understudy(args ...string) (string, error) {
	bin := binary(b.t, b.Root, "understudy")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--control", b.ControlSocket())...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("understudy %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}
