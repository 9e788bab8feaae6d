package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEventBuffer is the Events channel's capacity when
// MonitorConfig.EventBuffer is zero.
const DefaultEventBuffer = 64

// MonitorConfig configures a Monitor. The zero value plus server
// addresses is valid.
type MonitorConfig struct {
	Config // probe interval (each probe's timeout too), misses, rise

	Servers [2]netip.AddrPort // primary, backup: their real addresses and service port
	Names   [2]string         // "" is "primary", "backup"

	// HTTPPath selects HTTP probes of this path; empty means TCP connect
	// probes, which cannot see a hung server (see TCPProber).
	HTTPPath string
	HTTPHost string // Host header of HTTP probes; "" is the server's address

	// Iface is the gateway's server-side interface. Losing its carrier
	// takes both servers down at once. Empty: no link watch.
	Iface string

	EventBuffer int          // capacity of Events; 0 is DefaultEventBuffer
	Log         *slog.Logger // nil is slog.Default()

	// Probers replaces the probe of a server (nil: built from the fields
	// above). Its probes get a context with a deadline of one Interval.
	Probers [2]Prober

	// Busy, if set, reports what the server has sent clients through the
	// gateway since the given time. A probe that timed out while its server
	// was answering clients says the server is loaded, not dead: it counts
	// neither as a miss nor as a success. A silent host sends nothing. A
	// hung server's kernel still sends what its sockets hold, for seconds
	// to a slow client, but answers nothing: timeouts while the server only
	// sends are excused for BusyFor in a row, then count. A refused or
	// reset probe always counts.
	Busy func(server int, since time.Time) Activity
	// BusyFor bounds how long in a row timeouts are excused while the
	// server sends but answers nothing; 0 is DefaultBusyFor.
	BusyFor time.Duration
}

// DefaultBusyFor is MonitorConfig.BusyFor when it is zero.
const DefaultBusyFor = time.Second

// Activity is what a server sent clients since some time.
type Activity uint8

const (
	// Quiet: no application data.
	Quiet Activity = iota
	// Sending: data, but no answer to data a client sent since: what a
	// hung server's kernel sends from its sockets looks the same.
	Sending
	// Answering: a reply to data a client sent since; only a running
	// server process writes one.
	Answering
)

// Monitor probes both servers, watches the server-side link, feeds the
// detectors and delivers their transitions on Events.
type Monitor struct {
	cfg     MonitorConfig
	log     *slog.Logger
	srv     [2]*monServer
	events  chan Transition
	dropped atomic.Uint64
	running atomic.Bool

	linkMu sync.Mutex
	link   LinkStatus
}

type monServer struct {
	index  int
	name   string
	addr   netip.AddrPort
	kind   string
	prober Prober
	custom bool

	mu        sync.Mutex // serialises the probe loop, Evidence and Fence
	det       *Detector
	lastProbe time.Time
	lastRTT   time.Duration
	lastOK    bool
	lastErr   string
	timeouts  uint64
	// busyTimeouts are timeouts not counted: the server was answering
	// clients, or for up to BusyFor only sending them data (sendingTimeouts).
	busyTimeouts, sendingTimeouts uint64
	// sendingSince is when the current run of timeouts excused by data
	// that answered nothing began (zero: none).
	sendingSince time.Time
}

// NewMonitor checks cfg and prepares a monitor; Run starts it.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	cfg.Config = cfg.Config.WithDefaults()
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	if cfg.BusyFor <= 0 {
		cfg.BusyFor = DefaultBusyFor
	}
	if cfg.Names[0] == "" {
		cfg.Names[0] = "primary"
	}
	if cfg.Names[1] == "" {
		cfg.Names[1] = "backup"
	}
	m := &Monitor{
		cfg:    cfg,
		log:    cfg.Log,
		events: make(chan Transition, cfg.EventBuffer),
		link:   LinkStatus{Iface: cfg.Iface},
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	for i := range m.srv {
		s := &monServer{
			index:  i,
			name:   cfg.Names[i],
			addr:   cfg.Servers[i],
			prober: cfg.Probers[i],
			custom: cfg.Probers[i] != nil,
			det:    NewDetector(i, cfg.Names[i], cfg.Config),
		}
		switch {
		case s.custom:
			s.kind = "custom"
		case !s.addr.IsValid() || s.addr.Port() == 0:
			return nil, fmt.Errorf("failover: %s server: no address and port to probe", s.name)
		case cfg.HTTPPath != "":
			s.kind = "http GET " + cfg.HTTPPath
			s.prober = &HTTPProber{Addr: s.addr, Path: cfg.HTTPPath, Host: cfg.HTTPHost, Timeout: cfg.Timeout}
		default:
			s.prober, s.kind = newConnectProber(s.addr, cfg.Timeout)
		}
		m.srv[i] = s
	}
	return m, nil
}

// ownedProber is a default prober with sockets of its own (SYNProber): the
// monitor opens it before the first probe, so that a fallback shows in the
// log and the status, and closes it when it stops.
type ownedProber interface {
	Prober
	io.Closer
	Open() error
	Kind() string
}

// Events delivers every health transition once, in order per server. The
// channel is buffered; a transition that finds it full is dropped and
// counted (Snapshot.EventsDropped) rather than stall the probes, so the
// datapath should read it promptly. It is never closed.
func (m *Monitor) Events() <-chan Transition { return m.events }

// Run probes until ctx ends, then returns nil; it fails if the link watch
// cannot start. It can be called once.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("failover: monitor already running")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	if m.cfg.Iface != "" {
		w := &LinkWatcher{Iface: m.cfg.Iface, OnChange: m.linkChange, Log: m.log}
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	for _, s := range m.srv {
		o, ok := s.prober.(ownedProber)
		if !ok || s.custom {
			continue
		}
		if err := o.Open(); err != nil {
			m.log.Warn("failover: "+err.Error(), "server", s.name)
		}
		s.mu.Lock()
		s.kind = o.Kind()
		s.mu.Unlock()
		defer o.Close() // after wg.Wait: no probe runs any more
	}
	for _, s := range m.srv {
		wg.Go(func() { m.probeLoop(ctx, s) })
	}
	m.log.Info("failover monitor started", "interval", m.cfg.Interval, "misses", m.cfg.Misses, "rise", m.cfg.Rise,
		"primary", m.srv[0].addr, "backup", m.srv[1].addr, "probe", m.srv[0].kind, "iface", m.cfg.Iface)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// probeLoop probes one server every Interval. A probe's timeout is
// Timeout (one Interval unless set) and the next probe starts only after it
// returned: a slow server is probed less often, never by overlapping probes.
func (m *Monitor) probeLoop(ctx context.Context, s *monServer) {
	tick := time.NewTicker(m.cfg.Interval)
	defer tick.Stop()
	for {
		start := time.Now()
		var err error
		if s.custom {
			pctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
			err = s.prober.Probe(pctx)
			cancel()
		} else {
			err = s.prober.Probe(ctx)
		}
		if ctx.Err() != nil {
			return // a probe cut short by shutdown says nothing of the server
		}
		m.record(s, start, time.Now(), err)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (m *Monitor) record(s *monServer, start, end time.Time, err error) {
	cause := ""
	if err != nil {
		cause = err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastProbe = end
	s.lastRTT = end.Sub(start)
	s.lastOK = err == nil
	s.lastErr = cause
	var pe *ProbeError
	if errors.As(err, &pe) && pe.Timeout() {
		s.timeouts++
		if m.excused(s, start) {
			s.busyTimeouts++
			return
		}
	} else {
		s.sendingSince = time.Time{}
	}
	if tr, changed := s.det.ObserveSent(start, end, err == nil, cause); changed {
		m.deliver(s, tr)
	}
}

// excused reports whether a timeout of the probe sent at start is excused
// by what s sent clients meanwhile (MonitorConfig.Busy); s.mu is held.
func (m *Monitor) excused(s *monServer, start time.Time) bool {
	act := Quiet
	if m.cfg.Busy != nil {
		act = m.cfg.Busy(s.index, start)
	}
	switch act {
	case Answering:
		s.sendingSince = time.Time{}
		return true
	case Sending:
		if s.sendingSince.IsZero() {
			s.sendingSince = start
		}
		if start.Sub(s.sendingSince) < m.cfg.BusyFor {
			s.sendingTimeouts++
			return true
		}
		return false
	}
	// Quiet: no excuse, and the run of sending goes on: a hung server's
	// kernel sends in bursts.
	return false
}

// Evidence reports a failure of server seen in a flow (e.g. "evidence:
// primary reset a protected flow"). It counts as one missed probe. Safe to
// call from the datapath: it never waits on I/O, only on a lock the probe
// loop holds for a few instructions.
func (m *Monitor) Evidence(server int, cause string) {
	if server < 0 || server >= len(m.srv) {
		return
	}
	s := m.srv[server]
	s.mu.Lock()
	defer s.mu.Unlock()
	if tr, changed := s.det.Evidence(time.Now(), cause); changed {
		m.deliver(s, tr)
	}
}

// Fence marks server down at once, whatever its probes say, so that it
// returns only after Rise good probes: the datapath calls it after the
// operator's failover (an Action with Manual set). The transition, if the
// server was not down already, is also delivered on Events.
func (m *Monitor) Fence(server int, cause string) {
	if server < 0 || server >= len(m.srv) {
		return
	}
	s := m.srv[server]
	s.mu.Lock()
	defer s.mu.Unlock()
	if tr, changed := s.det.Reset(time.Now(), Down, cause); changed {
		m.deliver(s, tr)
	}
}

func (m *Monitor) linkChange(ev LinkEvent) {
	m.linkMu.Lock()
	if m.link.Known {
		m.link.Changes++
	}
	m.link.Known, m.link.Carrier, m.link.State, m.link.Since = true, ev.Carrier, ev.State, ev.At
	m.linkMu.Unlock()
	if ev.Carrier {
		m.log.Info("server link carrier up", "iface", ev.Iface, "state", ev.State)
	} else {
		m.log.Warn("server link carrier lost", "iface", ev.Iface, "state", ev.State)
	}
	if ev.Carrier {
		for _, s := range m.srv {
			s.mu.Lock()
			s.det.LinkUp(ev.At)
			s.mu.Unlock()
		}
		return
	}
	// Every server is down before the first transition goes out: the
	// datapath, taking the active server's, must find its standby down
	// too (Health), not make it take over.
	var trs [2]Transition
	var changed [2]bool
	for i, s := range m.srv {
		s.mu.Lock()
		trs[i], changed[i] = s.det.LinkDown(ev.At, ev.Cause())
		s.mu.Unlock()
	}
	for i, s := range m.srv {
		if changed[i] {
			s.mu.Lock()
			m.deliver(s, trs[i])
			s.mu.Unlock()
		}
	}
}

// Dropped counts the transitions lost to a full Events channel: a reader
// that sees it grow should compare its view with Health.
func (m *Monitor) Dropped() uint64 { return m.dropped.Load() }

// Health returns server's health as its detector has it now, which may be
// ahead of the transitions not yet taken from Events.
func (m *Monitor) Health(server int) (Health, string) {
	if server < 0 || server >= len(m.srv) {
		return Unknown, ""
	}
	s := m.srv[server]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.det.Health(), s.det.Status().LastCause
}

// deliver logs a transition and queues it without blocking. Called with
// s.mu held, so that one server's transitions are queued in order.
func (m *Monitor) deliver(s *monServer, tr Transition) {
	if tr.To == Down {
		m.log.Warn("server down", "server", tr.Name, "addr", s.addr, "from", tr.From, "to", tr.To,
			"cause", tr.Cause, "detection_latency", tr.DetectionLatency(), "last_good", tr.LastGood)
	} else {
		m.log.Info("server "+tr.To.String(), "server", tr.Name, "addr", s.addr, "from", tr.From, "to", tr.To,
			"cause", tr.Cause)
	}
	select {
	case m.events <- tr:
	default:
		m.dropped.Add(1)
		m.log.Error("failover event dropped: events channel full", "server", tr.Name, "to", tr.To)
	}
}

// ServerStatus is one server's probe and health state.
type ServerStatus struct {
	Index int            `json:"index"`
	Name  string         `json:"name"`
	Addr  netip.AddrPort `json:"addr"`
	Probe string         `json:"probe"` // "tcp syn", "tcp connect", "http GET /path", "custom"
	DetectorStatus
	LastProbe   time.Time     `json:"last_probe"`
	LastProbeOK bool          `json:"last_probe_ok"`
	LastError   string        `json:"last_error,omitempty"` // of the last probe
	LastRTT     time.Duration `json:"last_rtt_ns"`
	Timeouts    uint64        `json:"probe_timeouts"` // of ProbesFailed
	// BusyTimeouts are timeouts not counted as misses: the server was
	// answering clients, or (SendingTimeouts, of these) sending them data
	// that answered nothing, for up to BusyFor in a row.
	BusyTimeouts    uint64 `json:"probe_timeouts_busy"`
	SendingTimeouts uint64 `json:"probe_timeouts_sending"`
}

// LinkStatus is the watched interface's carrier.
type LinkStatus struct {
	Iface   string    `json:"iface"`
	Known   bool      `json:"known"` // the watch has reported
	Carrier bool      `json:"carrier"`
	State   string    `json:"state,omitempty"`
	Since   time.Time `json:"since"`
	Changes uint64    `json:"changes"` // carrier changes after the first report
}

// Snapshot is the monitor's state for status output.
type Snapshot struct {
	Servers       [2]ServerStatus `json:"servers"`
	Link          *LinkStatus     `json:"link,omitempty"` // nil without Iface
	EventsDropped uint64          `json:"events_dropped"`
	Interval      time.Duration   `json:"interval_ns"`
	Misses        int             `json:"misses"`
	Rise          int             `json:"rise"`
}

// Snapshot returns the current state; safe to call at any time.
func (m *Monitor) Snapshot() Snapshot {
	snap := Snapshot{
		EventsDropped: m.dropped.Load(),
		Interval:      m.cfg.Interval,
		Misses:        m.cfg.Misses,
		Rise:          m.cfg.Rise,
	}
	for i, s := range m.srv {
		s.mu.Lock()
		snap.Servers[i] = ServerStatus{
			Index:           i,
			Name:            s.name,
			Addr:            s.addr,
			Probe:           s.kind,
			DetectorStatus:  s.det.Status(),
			LastProbe:       s.lastProbe,
			LastProbeOK:     s.lastOK,
			LastError:       s.lastErr,
			LastRTT:         s.lastRTT,
			Timeouts:        s.timeouts,
			BusyTimeouts:    s.busyTimeouts,
			SendingTimeouts: s.sendingTimeouts,
		}
		s.mu.Unlock()
	}
	if m.cfg.Iface != "" {
		m.linkMu.Lock()
		l := m.link
		m.linkMu.Unlock()
		snap.Link = &l
	}
	return snap
}
