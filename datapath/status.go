package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"understudy/failover"
	"understudy/pcaptap"
	"understudy/rewrite"
	"understudy/tcpstate"
)

// Status is what `understudy status` shows.
type Status struct {
	UptimeSeconds float64         `json:"uptime_seconds"`
	ClientIface   string          `json:"client_iface"`
	ServerIface   string          `json:"server_iface"`
	Services      []ServiceStatus `json:"services"`
	Servers       []ServerStatus  `json:"servers"`
	NewFlows      NewFlowRoles    `json:"new_flows"`
	Flows         FlowCounts      `json:"flows"`
	Packets       PacketCounts    `json:"packets"`
	// Drops counts dropped frames and segments by reason: frame parsing
	// (parse_*), the flow table, and the loop itself.
	Drops        map[string]uint64   `json:"drops"`
	KernelBypass BypassStatus        `json:"kernel_bypass"`
	Offloads     map[string][]string `json:"offloads_disabled"`
	OffloadsKept bool                `json:"offloads_kept"` // super-frames pass whole (KeepOffloads)
	LastFailover *Failover           `json:"last_failover"`
	Failovers    uint64              `json:"failovers"`
	Detection    failover.Snapshot   `json:"detection"`
	History      []failover.Action   `json:"role_history"`
	// Traffic counts the frames received (in) and sent (out) per leg.
	Traffic []TrafficCount `json:"traffic"`
	Loop    LoopStatus     `json:"loop"`
	Latency LatencyStatus  `json:"latency"`
	Pcap    *pcaptap.Stats `json:"pcap,omitempty"`
	// LogSuppressed counts per-flow and per-packet log lines the rate
	// limit refused.
	LogSuppressed uint64 `json:"log_lines_suppressed"`
}

// LoopStatus counts how the datapath loop waited for frames before each of
// its rounds. After a round that moved frames it watches the rings a moment
// (spinning), since the next segment of an exchange usually follows; after
// one that moved nothing it sleeps in poll at once. Many misses against few
// catches mean the spinning costs more than it saves.
type LoopStatus struct {
	SpinCaught uint64 `json:"spin_caught"` // a frame came while it spun
	SpinMissed uint64 `json:"spin_missed"` // none came: it slept in poll after spinning
	Slept      uint64 `json:"slept"`       // it slept in poll without spinning
	// TxBufferWaits counts transmits that found a socket's send buffer
	// full, because a device queue held its frames, and waited for room
	// (at most capture.MaxBufferWait per batch; frames still waiting then
	// are dropped as tx_error).
	TxBufferWaits uint64 `json:"tx_buffer_waits"`
	// SuperFrames counts the GRO/TSO super-frames received whole
	// (KeepOffloads), each rewritten once for all its segments.
	SuperFrames uint64 `json:"super_frames"`
}

// LatencyStatus holds the latency histograms.
type LatencyStatus struct {
	// Detection: first missed probe to the decision, per server failure
	// the probes or the flows detected (not manual failovers).
	Detection HistogramStatus `json:"detection"`
	// ClientStall: per flow moved by a takeover while its client waited,
	// how long until the client got its next frame.
	ClientStall HistogramStatus `json:"client_stall"`
}

// HistogramStatus is a latency histogram in seconds, buckets cumulative.
type HistogramStatus struct {
	Bounds     []float64 `json:"bounds_seconds"`
	Cumulative []uint64  `json:"cumulative"`
	Count      uint64    `json:"count"`
	SumSeconds float64   `json:"sum_seconds"`
}

func histogramStatus(h *tcpstate.Histogram) HistogramStatus {
	hs := HistogramStatus{Cumulative: h.Cumulative(), Count: h.Count, SumSeconds: h.Sum.Seconds()}
	for _, b := range tcpstate.LatencyBounds {
		hs.Bounds = append(hs.Bounds, b.Seconds())
	}
	return hs
}

// ServiceStatus is one protected VIP:port.
type ServiceStatus struct {
	VIP  string `json:"vip"`
	Port uint16 `json:"port"`
}

// ServerStatus is one server's role.
type ServerStatus struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Role   string `json:"role"`   // active, standby or out
	Health string `json:"health"` // up, down or unknown (not yet probed enough)
	// Drained: the operator took it out of new flows (understudy drain).
	Drained bool `json:"drained"`
	Flows   int  `json:"flows"` // open flows with a leg on it
}

// FlowCounts summarises the flow table.
type FlowCounts struct {
	Total       int            `json:"total"`
	HalfOpen    int            `json:"half_open"`
	HalfOpenCap int            `json:"half_open_cap"` // beyond it, the oldest half-open flow makes room
	ByState     map[string]int `json:"by_state"`
	Protected   int            `json:"protected"`
	Unprotected int            `json:"unprotected"`
	// UnprotectedWhy counts the unprotected flows by the reason they lost
	// their backup leg.
	UnprotectedWhy map[string]int `json:"unprotected_why"`
}

// PacketCounts counts frames in and the flow table's events.
type PacketCounts struct {
	ClientRx uint64            `json:"client_rx"`
	ServerRx uint64            `json:"server_rx"`
	Events   map[string]uint64 `json:"events"`
}

// BypassStatus reports the kernel-bypass table's counters.
type BypassStatus struct {
	Installed       bool   `json:"installed"`
	ClientDropped   uint64 `json:"client_dropped"`
	ServerDropped   uint64 `json:"server_dropped"`
	KernelForwarded uint64 `json:"kernel_forwarded"`
	SpoofedVIP      uint64 `json:"spoofed_vip"` // frames from the servers' LAN posing as a VIP
	Error           string `json:"error,omitempty"`
	RingDrops       uint64 `json:"ring_drops"`
}

// Status takes a snapshot under the datapath's lock.
func (g *Gateway) Status() Status {
	g.closeMu.RLock()
	defer g.closeMu.RUnlock()
	g.mu.Lock()
	s := Status{
		UptimeSeconds: time.Since(g.start).Seconds(),
		ClientIface:   g.cfg.ClientIface,
		ServerIface:   g.cfg.ServerIface,
		Flows:         FlowCounts{ByState: map[string]int{}, UnprotectedWhy: map[string]int{}},
		Drops:         map[string]uint64{},
		Offloads:      g.offloadChanged,
		OffloadsKept:  g.cfg.KeepOffloads,
	}
	for i := tcpstate.State(0); i < tcpstate.NumStates; i++ {
		s.Flows.ByState[i.String()] = 0
	}
	var using [2]int
	g.table.ForEach(func(f *tcpstate.Flow) {
		for i := range using {
			if f.Uses(i) {
				using[i]++
			}
		}
		s.Flows.ByState[f.State().String()]++
		if f.Protection() == tcpstate.Protected {
			s.Flows.Protected++
		} else {
			s.Flows.Unprotected++
			s.Flows.UnprotectedWhy[f.Why()]++
		}
	})
	s.Flows.Total = g.table.Len()
	s.LastFailover = g.lastFailover()
	s.Failovers = g.failovers
	s.Flows.HalfOpen = g.table.HalfOpen()
	s.Flows.HalfOpenCap = g.table.Config().MaxHalfOpen
	events, drops := g.table.Stats.Map()
	s.Packets = PacketCounts{ClientRx: g.clientRx, ServerRx: g.serverRx, Events: events}
	for k, v := range drops {
		s.Drops[k] = v
	}
	for r := rewrite.Reason(1); r < rewrite.NumReasons; r++ {
		s.Drops["parse_"+r.String()] = g.parseDrops[r]
	}
	for i, v := range g.loopDrops {
		s.Drops[loopDropNames[i]] = v
	}
	drained := g.drained
	s.NewFlows = g.newFlows()
	s.Traffic = g.traffic.status()
	s.Loop = LoopStatus{SpinCaught: g.waits[waitSpinCaught], SpinMissed: g.waits[waitSpinMissed], Slept: g.waits[waitSlept],
		TxBufferWaits: g.clientTx.BufferWaits() + g.serverTx.BufferWaits(), SuperFrames: g.superFrames}
	s.Latency.Detection = histogramStatus(&g.detection)
	s.Latency.ClientStall = histogramStatus(&g.table.Stats.Stalls)
	s.LogSuppressed = g.logLimit.total
	g.mu.Unlock()
	if g.cfg.Pcap != nil {
		ps := g.cfg.Pcap.Stats()
		s.Pcap = &ps
	}

	for _, sv := range g.cfg.Services {
		s.Services = append(s.Services, ServiceStatus{VIP: netip.AddrFrom4(sv.VIP).String(), Port: sv.Port})
	}
	roles := g.arb.Roles()
	for i, a := range []netip.Addr{g.cfg.Primary, g.cfg.Backup} {
		s.Servers = append(s.Servers, ServerStatus{Name: g.names[i], Addr: a.String(),
			Role: roles.Role(i), Health: roles.Health[i].String(), Drained: drained[i], Flows: using[i]})
	}
	s.Detection = g.mon.Snapshot()
	s.History = g.arb.History()
	if g.closed {
		// After Close (a status asked for during shutdown): the rings and
		// the tables are gone, and what they counted with them.
		s.KernelBypass.Error = "gateway closed"
		return s
	}
	if g.bypass != nil {
		c, err := g.bypass.Counters()
		// Installed means in place now: someone may have deleted the
		// tables (nft flush ruleset) under the gateway.
		in, ierr := g.bypass.Installed()
		s.KernelBypass.Installed = in && ierr == nil && err == nil
		if err = errors.Join(err, ierr); err != nil {
			s.KernelBypass.Error = err.Error()
		}
		s.KernelBypass.ClientDropped = c.ClientDropped
		s.KernelBypass.ServerDropped = c.ServerDropped
		s.KernelBypass.KernelForwarded = c.KernelForwarded
		s.KernelBypass.SpoofedVIP = c.SpoofedVIP
		if s.KernelBypass.Error == "" {
			// Dropped by the kernel for the gateway: counted with its own
			// drops (only when read whole, so the counter never goes back).
			s.Drops["spoofed_vip"] = c.SpoofedVIP
		}
	}
	s.KernelBypass.RingDrops = g.ringDrops()
	return s
}

// localAddrs lists the host's own IPv4 addresses: traffic from the servers to
// them (the gateway's own probes, an operator's curl) is not client traffic.
func localAddrs() ([][4]byte, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("datapath: list local addresses: %w", err)
	}
	var own [][4]byte
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			own = append(own, p.Addr().As4())
		}
	}
	return own, nil
}

// ringDrops adds up the frames the kernel dropped because a ring was full.
func (g *Gateway) ringDrops() uint64 {
	stats := make([]ringStats, len(g.rings))
	for i, r := range g.rings {
		stats[i] = r
	}
	return sumRingDrops(stats)
}

// ringStats is what ringDrops reads of a capture ring.
type ringStats interface {
	Stats() (packets, drops uint64, err error)
}

// sumRingDrops adds the rings' drop totals. Each ring keeps its own total
// across the kernel's reset-on-read counts (even when a read fails), so the
// sum is taken afresh each time: adding the totals up again on every status
// read counted each drop once per read.
func sumRingDrops(rings []ringStats) uint64 {
	var total uint64
	for _, r := range rings {
		_, d, _ := r.Stats()
		total += d
	}
	return total
}

// FlowInfo is one flow as `understudy flows` shows it.
type FlowInfo struct {
	Client     netip.AddrPort `json:"client"`
	VIP        netip.AddrPort `json:"vip"`
	State      string         `json:"state"`
	Protection string         `json:"protection"` // protected, unprotected or diverged
	Why        string         `json:"why,omitempty"`
	FromClient uint64         `json:"bytes_from_client"`
	ToClient   uint64         `json:"bytes_to_client"`
	Live       string         `json:"live"` // primary or backup
}

// Flows takes a snapshot of every flow under the datapath's lock.
func (g *Gateway) Flows() []FlowInfo {
	g.mu.Lock()
	out := make([]FlowInfo, 0, g.table.Len())
	g.table.ForEach(func(f *tcpstate.Flow) {
		k := f.Key()
		fi := FlowInfo{
			Client:     netip.AddrPortFrom(netip.AddrFrom4(k.Client), k.CPort),
			VIP:        netip.AddrPortFrom(netip.AddrFrom4(k.VIP), k.VPort),
			State:      f.State().String(),
			Protection: "protected",
			FromClient: f.BytesFromClient(),
			ToClient:   f.BytesToClient(),
		}
		if live := f.Live(); live >= 0 && live < len(g.names) {
			fi.Live = g.names[live]
		}
		switch {
		case f.Diverged():
			fi.Protection, fi.Why = "diverged", f.Why()
		case f.Protection() != tcpstate.Protected:
			fi.Protection, fi.Why = "unprotected", f.Why()
		}
		out = append(out, fi)
	})
	g.mu.Unlock()
	return out
}
