package datapath

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// StatusSource is what the metrics read: a Gateway, or a fake in tests.
type StatusSource interface {
	Status() Status
}

// Collector exports a gateway's status as Prometheus metrics. It takes a
// Status snapshot at scrape time, so the packet path does no extra work.
type Collector struct {
	src   StatusSource
	descs []*prometheus.Desc

	packets, bytes, events, flows, flowsProtected, flowsUnprotected, drops,
	failovers, detection, stall, divergences, probes, probeDuration,
	serverUp, serverActive, serverDrained, serverFlows,
	bypass, bypassDropped, kernelForwarded, ringDrops,
	pcapFrames, pcapDropped, pcapRotations, pcapErrors, logSuppressed, replayed, loopWaits, txBufferWaits, superFrames *prometheus.Desc
}

func (c *Collector) desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, nil)
	c.descs = append(c.descs, d)
	return d
}

// NewCollector returns a collector reading src at every scrape.
func NewCollector(src StatusSource) *Collector {
	c := &Collector{src: src}
	c.packets = c.desc("understudy_packets_total", "Frames the gateway received (direction in) or sent (out), by leg: client, primary or backup.", "direction", "leg")
	c.bytes = c.desc("understudy_bytes_total", "Bytes of the frames the gateway received (in) or sent (out), Ethernet headers included, by leg.", "direction", "leg")
	c.events = c.desc("understudy_events_total", "Events the flow table counted (segments, synthesized ACKs, takeovers, fenced servers...), by event.", "event")
	c.replayed = c.desc("understudy_replayed_bytes_total", "Bytes of the shadow's reply the gateway held and sent to clients after a takeover.")
	c.flows = c.desc("understudy_flows", "Flows in the flow table by state.", "state")
	c.flowsProtected = c.desc("understudy_flows_protected", "Flows whose two legs are in lockstep.")
	c.flowsUnprotected = c.desc("understudy_flows_unprotected", "Flows running on one server only, by the reason they lost or never had their shadow leg.", "reason")
	c.drops = c.desc("understudy_drops_total", "Dropped frames and segments by reason.", "reason")
	c.failovers = c.desc("understudy_failovers_total", "Takeovers of the active role, automatic and manual.")
	c.detection = c.desc("understudy_failover_detection_seconds", "Time from a server's first missed probe to the decision that it failed.")
	c.stall = c.desc("understudy_client_stall_seconds", "Per flow moved by a takeover while its client waited: time until the client got its next frame.")
	c.divergences = c.desc("understudy_divergences_total", "Flows reset at takeover because the servers' replies differed.")
	c.probes = c.desc("understudy_probes_total", "Health probes by server and result: ok, failed (refused, reset, bad reply), timeout (counted as a miss), timeout_busy (not counted: the server was answering clients), timeout_sending (not counted: the server was sending clients data that answered nothing, for up to a second in a row).", "server", "result")
	c.probeDuration = c.desc("understudy_probe_last_duration_seconds", "Duration of the server's latest health probe.", "server")
	c.serverUp = c.desc("understudy_server_up", "1 if the server's health probes pass, else 0.", "server")
	c.serverActive = c.desc("understudy_server_active", "1 if the server holds the active role (its stream reaches the clients of new flows), else 0.", "server")
	c.serverDrained = c.desc("understudy_server_drained", "1 if the operator drained the server (new flows avoid it), else 0.", "server")
	c.serverFlows = c.desc("understudy_server_flows", "Open flows with a leg on the server.", "server")
	c.bypass = c.desc("understudy_kernel_bypass_installed", "1 if the nftables kernel-bypass table is in place and readable, else 0.")
	c.bypassDropped = c.desc("understudy_kernel_bypass_dropped_packets_total", "Packets the kernel-bypass rules kept from the host's own stack, by interface side.", "side")
	c.kernelForwarded = c.desc("understudy_kernel_forwarded_packets_total", "Handled packets the host kernel tried to forward anyway; anything but 0 means the bypass leaks.")
	c.ringDrops = c.desc("understudy_ring_dropped_packets_total", "Frames the kernel dropped because a capture ring was full.")
	c.pcapFrames = c.desc("understudy_pcap_frames_total", "Frames written to the --pcap file.")
	c.pcapDropped = c.desc("understudy_pcap_dropped_frames_total", "Frames not written to the --pcap file: its buffer was full or no file was open.")
	c.pcapRotations = c.desc("understudy_pcap_rotations_total", "Rotations of the --pcap file.")
	c.pcapErrors = c.desc("understudy_pcap_errors_total", "Failed writes, opens and renames of the --pcap file.")
	c.logSuppressed = c.desc("understudy_log_lines_suppressed_total", "Per-flow and per-packet log lines the rate limit refused.")
	c.txBufferWaits = c.desc("understudy_tx_buffer_waits_total", "Transmits that found a socket's send buffer full (a device queue held its frames) and waited for room.")
	c.superFrames = c.desc("understudy_super_frames_total", "GRO/TSO super-frames received whole (--keep-offloads), each rewritten once for all its segments.")
	c.loopWaits = c.desc("understudy_loop_waits_total", "How the datapath loop waited for frames before a round: spin_caught (a frame came while it spun after a busy round), spin_missed (it spun, then slept in poll), slept (after an idle round, straight to poll).", "how")
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	histogram := func(d *prometheus.Desc, h HistogramStatus) {
		buckets := make(map[float64]uint64, len(h.Bounds))
		for i, b := range h.Bounds {
			buckets[b] = h.Cumulative[i]
		}
		ch <- prometheus.MustNewConstHistogram(d, h.Count, h.SumSeconds, buckets)
	}
	for _, t := range st.Traffic {
		counter(c.packets, t.Packets, t.Direction, t.Leg)
		counter(c.bytes, t.Bytes, t.Direction, t.Leg)
	}
	for _, e := range sortedKeys(st.Packets.Events) {
		if e == "replayed_bytes" {
			continue // bytes, not events: a metric of its own
		}
		counter(c.events, st.Packets.Events[e], e)
	}
	counter(c.replayed, st.Packets.Events["replayed_bytes"])
	for _, state := range sortedKeys(st.Flows.ByState) {
		gauge(c.flows, float64(st.Flows.ByState[state]), state)
	}
	gauge(c.flowsProtected, float64(st.Flows.Protected))
	for _, why := range sortedKeys(st.Flows.UnprotectedWhy) {
		gauge(c.flowsUnprotected, float64(st.Flows.UnprotectedWhy[why]), why)
	}
	for _, reason := range sortedKeys(st.Drops) {
		counter(c.drops, st.Drops[reason], reason)
	}
	counter(c.failovers, st.Failovers)
	histogram(c.detection, st.Latency.Detection)
	histogram(c.stall, st.Latency.ClientStall)
	counter(c.divergences, st.Packets.Events["divergences"])
	for _, p := range st.Detection.Servers {
		if p.Name == "" {
			continue
		}
		timeouts := p.Timeouts - p.BusyTimeouts // counted as misses
		counter(c.probes, p.ProbesOK, p.Name, "ok")
		counter(c.probes, p.ProbesFailed-min(timeouts, p.ProbesFailed), p.Name, "failed")
		counter(c.probes, timeouts, p.Name, "timeout")
		counter(c.probes, p.BusyTimeouts-p.SendingTimeouts, p.Name, "timeout_busy")
		counter(c.probes, p.SendingTimeouts, p.Name, "timeout_sending")
		gauge(c.probeDuration, p.LastRTT.Seconds(), p.Name)
	}
	for _, s := range st.Servers {
		gauge(c.serverUp, b2f(s.Health == "up"), s.Name)
		gauge(c.serverActive, b2f(s.Role == "active"), s.Name)
		gauge(c.serverDrained, b2f(s.Drained), s.Name)
		gauge(c.serverFlows, float64(s.Flows), s.Name)
	}
	kb := st.KernelBypass
	gauge(c.bypass, b2f(kb.Installed))
	counter(c.bypassDropped, kb.ClientDropped, "client")
	counter(c.bypassDropped, kb.ServerDropped, "server")
	counter(c.kernelForwarded, kb.KernelForwarded)
	counter(c.ringDrops, kb.RingDrops)
	counter(c.logSuppressed, st.LogSuppressed)
	counter(c.loopWaits, st.Loop.SpinCaught, "spin_caught")
	counter(c.loopWaits, st.Loop.SpinMissed, "spin_missed")
	counter(c.loopWaits, st.Loop.Slept, "slept")
	counter(c.txBufferWaits, st.Loop.TxBufferWaits)
	counter(c.superFrames, st.Loop.SuperFrames)
	if p := st.Pcap; p != nil {
		counter(c.pcapFrames, p.Frames)
		counter(c.pcapDropped, p.Dropped)
		counter(c.pcapRotations, p.Rotations)
		counter(c.pcapErrors, p.Errors)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
