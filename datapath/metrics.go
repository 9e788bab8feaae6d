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
	src StatusSource

	packets, flows, drops, failovers, serverUp, bypass, divergences *prometheus.Desc
}

// packetCounters maps the flow table's event counters to the packets
// metric's direction and leg.
var packetCounters = []struct{ event, direction, leg string }{
	{"client_segments", "in", "client"},
	{"server_segments", "in", "server"},
	{"to_client", "out", "client"},
	{"to_primary", "out", "primary"},
	{"to_backup", "out", "backup"},
}

// NewCollector returns a collector reading src at every scrape.
func NewCollector(src StatusSource) *Collector {
	return &Collector{
		src:         src,
		packets:     prometheus.NewDesc("understudy_packets_total", "TCP segments handled by the flow table, by direction (in, out) and leg (client, server, primary, backup).", []string{"direction", "leg"}, nil),
		flows:       prometheus.NewDesc("understudy_flows", "Flows in the flow table by state.", []string{"state"}, nil),
		drops:       prometheus.NewDesc("understudy_drops_total", "Dropped frames and segments by reason.", []string{"reason"}, nil),
		failovers:   prometheus.NewDesc("understudy_failovers_total", "Takeovers of the active role, automatic and manual.", nil, nil),
		serverUp:    prometheus.NewDesc("understudy_server_up", "1 if the server's health probes pass, else 0.", []string{"server"}, nil),
		bypass:      prometheus.NewDesc("understudy_kernel_bypass_installed", "1 if the nftables kernel-bypass table is installed.", nil, nil),
		divergences: prometheus.NewDesc("understudy_divergences_total", "Flows reset at takeover because the servers' replies differed.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.flows, c.drops, c.failovers, c.serverUp, c.bypass, c.divergences} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	for _, p := range packetCounters {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(st.Packets.Events[p.event]), p.direction, p.leg)
	}
	for _, state := range sortedKeys(st.Flows.ByState) {
		ch <- prometheus.MustNewConstMetric(c.flows, prometheus.GaugeValue, float64(st.Flows.ByState[state]), state)
	}
	for _, reason := range sortedKeys(st.Drops) {
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(st.Drops[reason]), reason)
	}
	ch <- prometheus.MustNewConstMetric(c.failovers, prometheus.CounterValue, float64(st.Failovers))
	for _, s := range st.Servers {
		up := 0.0
		if s.Health == "up" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.serverUp, prometheus.GaugeValue, up, s.Name)
	}
	installed := 0.0
	if st.KernelBypass.Installed {
		installed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.bypass, prometheus.GaugeValue, installed)
	ch <- prometheus.MustNewConstMetric(c.divergences, prometheus.CounterValue, float64(st.Packets.Events["divergences"]))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
