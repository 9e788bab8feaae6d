package failover

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// acceptor serves addr, accepting and closing every connection; stop it
// with the returned function.
func acceptor(t *testing.T, addr string) (netip.AddrPort, func()) {
	t.Helper()
	// Re-listening on a fixed port can race with the probes' own sockets
	// for a moment (a probe's ephemeral port may be that very port).
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(time.Second); ; {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	serve(ln, func(c net.Conn) { c.Close() })
	stop := func() { ln.Close() }
	t.Cleanup(stop)
	return ln.Addr().(*net.TCPAddr).AddrPort(), stop
}

// startMonitor runs m until the test ends.
func startMonitor(t *testing.T, m *Monitor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
}

// waitEvent returns the next transition of server to health to; other
// servers' transitions are skipped, the server's others fail the test.
func waitEvent(t *testing.T, m *Monitor, server int, to Health, within time.Duration) Transition {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case tr := <-m.Events():
			if tr.Server != server {
				continue
			}
			if tr.To != to {
				t.Fatalf("transition %v, want %s to %v", tr, tr.Name, to)
			}
			return tr
		case <-deadline:
			t.Fatalf("no transition of server %d to %v within %v; snapshot %+v", server, to, within, m.Snapshot())
		}
	}
}

// slack absorbs timer and scheduler delays of a loaded test machine on
// top of the protocol's own bound.
const slack = 15 * time.Millisecond

func TestMonitorTCP(t *testing.T) {
	const interval = 5 * time.Millisecond
	primary, stop := acceptor(t, "127.0.0.1:0")
	backup, _ := acceptor(t, "127.0.0.1:0")
	m, err := NewMonitor(MonitorConfig{
		Config:  Config{Interval: interval, Misses: 3, Rise: 3},
		Servers: [2]netip.AddrPort{primary, backup},
		Log:     quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	startMonitor(t, m)
	tr := waitEvent(t, m, Primary, Up, time.Second)
	if tr.From != Unknown || tr.Name != "primary" {
		t.Fatalf("first transition %v", tr)
	}

	stop()
	stopped := time.Now()
	tr = waitEvent(t, m, Primary, Down, time.Second)
	bound := interval * time.Duration(3+2)
	if took := tr.At.Sub(stopped); took > bound+slack {
		t.Errorf("down %v after the listener stopped, want within %v", took, bound)
	}
	if !strings.Contains(tr.Cause, "probe "+primary.String()+": connect: connection refused") {
		t.Errorf("cause %q", tr.Cause)
	}
	if tr.DetectionLatency() <= 0 || tr.LastGood.IsZero() || tr.LastGood.After(tr.FirstMiss) {
		t.Errorf("down transition times: first miss %v last good %v latency %v", tr.FirstMiss, tr.LastGood, tr.DetectionLatency())
	}
	t.Logf("down %v after stop, detection latency %v: %v", tr.At.Sub(stopped), tr.DetectionLatency(), tr)

	st := m.Snapshot().Servers[Primary]
	if st.Health != Down || st.LastProbeOK || st.LastError == "" || st.ConsecutiveMisses < 3 || st.ProbesOK < 3 || st.ProbesFailed < 3 {
		t.Errorf("snapshot after down: %+v", st)
	}

	acceptor(t, primary.String())
	restarted := time.Now()
	tr = waitEvent(t, m, Primary, Up, time.Second)
	if tr.From != Down {
		t.Errorf("up transition %v", tr)
	}
	if took := tr.At.Sub(restarted); took < interval*2 {
		t.Errorf("up %v after restart: sooner than Rise probes", took)
	}
	st = m.Snapshot().Servers[Primary]
	if st.Health != Up || st.ConsecutiveOK < 3 || st.ConsecutiveMisses != 0 || !st.LastProbeOK || st.LastError != "" ||
		st.Transitions != 3 || st.Probe != defaultProbeKind() || st.Addr != primary {
		t.Errorf("snapshot after up: %+v", st)
	}
	if bst := m.Snapshot().Servers[Backup]; bst.Health != Up || bst.ProbesFailed != 0 {
		t.Errorf("backup snapshot: %+v", bst)
	}
}

func TestMonitorHTTPHang(t *testing.T) {
	const interval = 5 * time.Millisecond
	var hang atomic.Bool
	release := make(chan struct{})
	primary := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			<-release
			return
		}
		w.Write([]byte("ok"))
	})
	backup := httpServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	// Registered after the servers, so it runs before their Close, which
	// waits for the hung handlers.
	t.Cleanup(func() { close(release) })
	m, err := NewMonitor(MonitorConfig{
		Config:   Config{Interval: interval, Misses: 3, Rise: 2},
		Servers:  [2]netip.AddrPort{primary, backup},
		HTTPPath: "/index.html",
		Log:      quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	startMonitor(t, m)
	waitEvent(t, m, Primary, Up, time.Second)

	hang.Store(true)
	tr := waitEvent(t, m, Primary, Down, time.Second)
	if want := "GET /index.html: timeout after 5ms"; !strings.Contains(tr.Cause, want) {
		t.Errorf("cause %q, want %q", tr.Cause, want)
	}
	if st := m.Snapshot().Servers[Primary]; st.Timeouts < 3 || st.Probe != "http GET /index.html" {
		t.Errorf("snapshot %+v", st)
	}
	hang.Store(false)
	waitEvent(t, m, Primary, Up, time.Second)
}

// scripted is a prober whose result the test sets.
type scripted struct{ fail atomic.Bool }

func (p *scripted) Probe(ctx context.Context) error {
	if p.fail.Load() {
		return &ProbeError{Op: "connect", Err: &TimeoutError{After: time.Millisecond}}
	}
	return nil
}

// quietMonitor probes once at start (rise 1 brings both servers up) and
// then not for an hour, so that evidence and fencing act alone.
func quietMonitor(t *testing.T, buffer int) (*Monitor, [2]*scripted) {
	t.Helper()
	p := [2]*scripted{{}, {}}
	m, err := NewMonitor(MonitorConfig{
		Config:      Config{Interval: time.Hour, Misses: 3, Rise: 1},
		Probers:     [2]Prober{p[0], p[1]},
		EventBuffer: buffer,
		Log:         quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	startMonitor(t, m)
	return m, p
}

func TestMonitorEvidence(t *testing.T) {
	// Probes an hour apart: evidence acts alone, and a burst of it within
	// one interval counts as one miss (the detector's scripts show misses
	// of evidence taking a server down).
	m, _ := quietMonitor(t, 0)
	waitEvent(t, m, Primary, Up, time.Second)
	const cause = "evidence: primary reset a protected flow"
	for range 5 {
		m.Evidence(Primary, cause)
	}
	m.Evidence(7, cause) // out of range: ignored
	if st := m.Snapshot().Servers[Primary]; st.Health != Up || st.Evidence != 5 || st.ConsecutiveMisses != 1 {
		t.Fatalf("after a burst of 5 evidence: %+v; want up, 5 counted, 1 miss", st)
	}
	for deadline := time.After(20 * time.Millisecond); ; {
		select {
		case tr := <-m.Events():
			if tr.Server == Primary {
				t.Fatalf("a burst of evidence made a transition: %v", tr)
			}
			continue // the backup's own probe result
		case <-deadline:
		}
		break
	}
}

func TestMonitorFence(t *testing.T) {
	m, _ := quietMonitor(t, 0)
	waitEvent(t, m, Primary, Up, time.Second)
	m.Fence(Primary, "manual failover from primary to backup")
	tr := waitEvent(t, m, Primary, Down, time.Second)
	if tr.From != Up || tr.Cause != "manual failover from primary to backup" {
		t.Fatalf("fence transition %v", tr)
	}
	if st := m.Snapshot().Servers[Primary]; st.Health != Down || st.ConsecutiveOK != 0 {
		t.Fatalf("after fence: %+v", st)
	}
}

func TestMonitorDropsWhenFull(t *testing.T) {
	m, _ := quietMonitor(t, 1)
	deadline := time.Now().Add(time.Second)
	for m.Snapshot().EventsDropped == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no drop with both servers up and a 1-slot channel: %+v", m.Snapshot())
		}
		time.Sleep(time.Millisecond)
	}
	// Nobody reads Events: evidence and a fence, whose transition is
	// dropped, still return at once.
	done := make(chan struct{})
	go func() {
		for range 10 {
			m.Evidence(Backup, "evidence")
		}
		m.Fence(Backup, "fence")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Evidence or Fence blocked on a full channel")
	}
	if got := m.Snapshot().EventsDropped; got != 2 {
		t.Fatalf("dropped %d events, want 2", got)
	}
}

func TestMonitorConfig(t *testing.T) {
	if _, err := NewMonitor(MonitorConfig{}); err == nil || !strings.Contains(err.Error(), "primary server: no address") {
		t.Fatalf("NewMonitor without addresses: %v", err)
	}
	a := netip.MustParseAddrPort("127.0.0.1:80")
	m, err := NewMonitor(MonitorConfig{Servers: [2]netip.AddrPort{a, a}, Names: [2]string{"web1", ""}})
	if err != nil {
		t.Fatal(err)
	}
	snap := m.Snapshot()
	if snap.Interval != DefaultInterval || snap.Misses != DefaultMisses || snap.Rise != DefaultRise ||
		snap.Servers[0].Name != "web1" || snap.Servers[1].Name != "backup" || snap.Link != nil ||
		snap.Servers[0].Health != Unknown || cap(m.Events()) != DefaultEventBuffer {
		t.Fatalf("snapshot of a fresh monitor: %+v", snap)
	}
}

func TestMonitorRunErrors(t *testing.T) {
	_, addr := listen(t)
	m, err := NewMonitor(MonitorConfig{Servers: [2]netip.AddrPort{addr, addr}, Iface: "fo-nonexistent", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Run(ctx); err == nil || !strings.Contains(err.Error(), "fo-nonexistent") {
		t.Fatalf("Run with a missing interface: %v", err)
	}
	if err := m.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run: %v", err)
	}
}

// TestMonitorBusyTimeouts: timeouts of a server that is answering clients
// are not misses, for as long as it answers; once it is quiet they are.
func TestMonitorBusyTimeouts(t *testing.T) {
	var act atomic.Uint32
	act.Store(uint32(Answering))
	p := [2]*scripted{{}, {}}
	p[0].fail.Store(true)
	m, err := NewMonitor(MonitorConfig{
		Config:  Config{Interval: 2 * time.Millisecond, Misses: 2, Rise: 1},
		Probers: [2]Prober{p[0], p[1]},
		Busy:    func(server int, _ time.Time) Activity { return Activity(act.Load()) * Activity(1-server) },
		BusyFor: 20 * time.Millisecond,
		Log:     quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	startMonitor(t, m)
	time.Sleep(100 * time.Millisecond) // five times BusyFor
	if st := m.Snapshot().Servers[Primary]; st.Health == Down || st.BusyTimeouts == 0 {
		t.Fatalf("answering server: health %v, busy timeouts %d", st.Health, st.BusyTimeouts)
	}
	act.Store(uint32(Quiet))
	waitEvent(t, m, Primary, Down, time.Second)
}

// judge makes a monitor, never run, whose primary's probe timeouts are
// judged by calling excused with synthetic probe times; *act is what the
// primary sent meanwhile. BusyFor is a second.
func judge(t *testing.T, act *Activity) (*Monitor, *monServer) {
	t.Helper()
	m, err := NewMonitor(MonitorConfig{
		Config:  Config{Interval: 10 * time.Millisecond, Misses: 3, Rise: 1},
		Probers: [2]Prober{&scripted{}, &scripted{}},
		Busy:    func(int, time.Time) Activity { return *act },
		BusyFor: time.Second,
		Log:     quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, m.srv[Primary]
}

// TestMonitorSendingBound: a server whose probes time out while it sends
// data but answers nothing (a hung server's kernel emptying its sockets to
// slow clients) is excused for BusyFor in a row, and then its timeouts
// count. An answer in between starts the run again. Probe times are
// synthetic, every 10 ms.
func TestMonitorSendingBound(t *testing.T) {
	var act Activity
	m, s := judge(t, &act)
	t0 := time.Now()
	for k := range 250 {
		act = Sending
		if k == 50 {
			act = Answering // half a second in
		}
		// The run restarts at probe 51: excused up to probe 150.
		if got, want := m.excused(s, t0.Add(time.Duration(k)*10*time.Millisecond)), k <= 150; got != want {
			t.Fatalf("timeout of probe %d (%v): excused %v, want %v", k, act, got, want)
		}
	}
	if s.sendingTimeouts != 150 {
		t.Fatalf("%d timeouts excused while only sending, want 150", s.sendingTimeouts)
	}
}

// TestMonitorSendingDown: past BusyFor, a server that only sends is taken
// down by its timeouts, through the probe loop.
func TestMonitorSendingDown(t *testing.T) {
	p := [2]*scripted{{}, {}}
	p[0].fail.Store(true)
	m, err := NewMonitor(MonitorConfig{
		Config:  Config{Interval: 2 * time.Millisecond, Misses: 2, Rise: 1},
		Probers: [2]Prober{p[0], p[1]},
		Busy:    func(int, time.Time) Activity { return Sending },
		BusyFor: 50 * time.Millisecond,
		Log:     quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	startMonitor(t, m)
	waitEvent(t, m, Primary, Down, 2*time.Second)
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("down after %v, within BusyFor", took)
	}
	if st := m.Snapshot().Servers[Primary]; st.SendingTimeouts == 0 {
		t.Fatalf("no timeouts excused while sending: %+v", st)
	}
}

// TestMonitorQuietKeepsSendingRun: a timeout in a probe window with no data
// at all counts, and does not start the second of excuse for data that
// answers nothing again: a hung server's kernel sends in bursts.
func TestMonitorQuietKeepsSendingRun(t *testing.T) {
	var act Activity
	m, s := judge(t, &act)
	t0 := time.Now()
	// Three seconds of timeouts, one every 10 ms, one window in ten quiet.
	excused := 0
	for k := range 300 {
		act = Sending
		if k%10 == 9 {
			act = Quiet
		}
		if m.excused(s, t0.Add(time.Duration(k)*10*time.Millisecond)) {
			excused++
		}
	}
	if excused != 90 {
		t.Fatalf("%d of 300 timeouts excused, want the 90 sending ones of the first second", excused)
	}
}

// defaultProbeKind is the probe a monitor without an HTTP path runs here:
// raw SYNs need Linux and CAP_NET_RAW.
func defaultProbeKind() string {
	if rawSocketsAllowed() {
		return "tcp syn"
	}
	return "tcp connect"
}
