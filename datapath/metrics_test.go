package datapath

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"understudy/failover"
	"understudy/pcaptap"
	"understudy/tcpstate"
)

type fakeStatus struct{ st Status }

func (f *fakeStatus) Status() Status { return f.st }

func fakeHistogram(obs ...time.Duration) HistogramStatus {
	var h tcpstate.Histogram
	for _, d := range obs {
		h.Observe(d)
	}
	return histogramStatus(&h)
}

func fakeGatewayStatus() Status {
	st := Status{
		Servers: []ServerStatus{{Name: "primary", Role: "out", Health: "down", Flows: 2},
			{Name: "backup", Role: "active", Health: "up", Drained: true, Flows: 5}},
		Flows: FlowCounts{ByState: map[string]int{"established": 3, "syn_sent": 1}, Protected: 1,
			UnprotectedWhy: map[string]int{"took_over": 2, "drained": 1}},
		Packets: PacketCounts{Events: map[string]uint64{"takeovers": 2, "divergences": 1, "replayed_bytes": 5000}},
		Traffic: []TrafficCount{{"in", "client", 10, 1000}, {"in", "primary", 20, 30000}, {"in", "backup", 19, 29000},
			{"out", "client", 21, 31000}, {"out", "primary", 8, 800}, {"out", "backup", 9, 900}},
		Drops:        map[string]uint64{"no_flow": 4, "parse_short": 1},
		KernelBypass: BypassStatus{Installed: true, ClientDropped: 10, ServerDropped: 39, RingDrops: 3},
		Loop:         LoopStatus{SpinCaught: 7, SpinMissed: 5, Slept: 3, TxBufferWaits: 11, SuperFrames: 13},
		Failovers:    1,
		Latency: LatencyStatus{Detection: fakeHistogram(21 * time.Millisecond),
			ClientStall: fakeHistogram(4*time.Millisecond, 30*time.Millisecond)},
		Pcap: &pcaptap.Stats{Frames: 87, Dropped: 2, Rotations: 1},
	}
	st.Detection.Servers[0] = failover.ServerStatus{Name: "primary", LastRTT: 2 * time.Millisecond,
		Timeouts: 8, BusyTimeouts: 4, SendingTimeouts: 1, DetectorStatus: failover.DetectorStatus{Counters: failover.Counters{ProbesOK: 100, ProbesFailed: 7}}}
	st.Detection.Servers[1] = failover.ServerStatus{Name: "backup", LastRTT: time.Millisecond,
		DetectorStatus: failover.DetectorStatus{Counters: failover.Counters{ProbesOK: 110}}}
	return st
}

func TestCollector(t *testing.T) {
	src := &fakeStatus{st: fakeGatewayStatus()}
	c := NewCollector(src)
	want := `
# HELP understudy_bytes_total Bytes of the frames the gateway received (in) or sent (out), Ethernet headers included, by leg.
# TYPE understudy_bytes_total counter
understudy_bytes_total{direction="in",leg="backup"} 29000
understudy_bytes_total{direction="in",leg="client"} 1000
understudy_bytes_total{direction="in",leg="primary"} 30000
understudy_bytes_total{direction="out",leg="backup"} 900
understudy_bytes_total{direction="out",leg="client"} 31000
understudy_bytes_total{direction="out",leg="primary"} 800
# HELP understudy_packets_total Frames the gateway received (direction in) or sent (out), by leg: client, primary or backup.
# TYPE understudy_packets_total counter
understudy_packets_total{direction="in",leg="backup"} 19
understudy_packets_total{direction="in",leg="client"} 10
understudy_packets_total{direction="in",leg="primary"} 20
understudy_packets_total{direction="out",leg="backup"} 9
understudy_packets_total{direction="out",leg="client"} 21
understudy_packets_total{direction="out",leg="primary"} 8
# HELP understudy_probes_total Health probes by server and result: ok, failed (refused, reset, bad reply), timeout (counted as a miss), timeout_busy (not counted: the server was answering clients), timeout_sending (not counted: the server was sending clients data that answered nothing, for up to a second in a row).
# TYPE understudy_probes_total counter
understudy_probes_total{result="failed",server="backup"} 0
understudy_probes_total{result="failed",server="primary"} 3
understudy_probes_total{result="ok",server="backup"} 110
understudy_probes_total{result="ok",server="primary"} 100
understudy_probes_total{result="timeout",server="backup"} 0
understudy_probes_total{result="timeout",server="primary"} 4
understudy_probes_total{result="timeout_busy",server="backup"} 0
understudy_probes_total{result="timeout_busy",server="primary"} 3
understudy_probes_total{result="timeout_sending",server="backup"} 0
understudy_probes_total{result="timeout_sending",server="primary"} 1
# HELP understudy_client_stall_seconds Per flow moved by a takeover while its client waited: time until the client got its next frame.
# TYPE understudy_client_stall_seconds histogram
understudy_client_stall_seconds_bucket{le="0.001"} 0
understudy_client_stall_seconds_bucket{le="0.002"} 0
understudy_client_stall_seconds_bucket{le="0.005"} 1
understudy_client_stall_seconds_bucket{le="0.01"} 1
understudy_client_stall_seconds_bucket{le="0.02"} 1
understudy_client_stall_seconds_bucket{le="0.05"} 2
understudy_client_stall_seconds_bucket{le="0.1"} 2
understudy_client_stall_seconds_bucket{le="0.2"} 2
understudy_client_stall_seconds_bucket{le="0.5"} 2
understudy_client_stall_seconds_bucket{le="1"} 2
understudy_client_stall_seconds_bucket{le="2"} 2
understudy_client_stall_seconds_bucket{le="5"} 2
understudy_client_stall_seconds_bucket{le="10"} 2
understudy_client_stall_seconds_bucket{le="+Inf"} 2
understudy_client_stall_seconds_sum 0.034
understudy_client_stall_seconds_count 2
# HELP understudy_flows_unprotected Flows running on one server only, by the reason they lost or never had their shadow leg.
# TYPE understudy_flows_unprotected gauge
understudy_flows_unprotected{reason="drained"} 1
understudy_flows_unprotected{reason="took_over"} 2
# HELP understudy_server_drained 1 if the operator drained the server (new flows avoid it), else 0.
# TYPE understudy_server_drained gauge
understudy_server_drained{server="backup"} 1
understudy_server_drained{server="primary"} 0
# HELP understudy_server_active 1 if the server holds the active role (its stream reaches the clients of new flows), else 0.
# TYPE understudy_server_active gauge
understudy_server_active{server="backup"} 1
understudy_server_active{server="primary"} 0
# HELP understudy_kernel_bypass_dropped_packets_total Packets the kernel-bypass rules kept from the host's own stack, by interface side.
# TYPE understudy_kernel_bypass_dropped_packets_total counter
understudy_kernel_bypass_dropped_packets_total{side="client"} 10
understudy_kernel_bypass_dropped_packets_total{side="server"} 39
# HELP understudy_replayed_bytes_total Bytes of the shadow's reply the gateway held and sent to clients after a takeover.
# TYPE understudy_replayed_bytes_total counter
understudy_replayed_bytes_total 5000
# HELP understudy_loop_waits_total How the datapath loop waited for frames before a round: spin_caught (a frame came while it spun after a busy round), spin_missed (it spun, then slept in poll), slept (after an idle round, straight to poll).
# TYPE understudy_loop_waits_total counter
understudy_loop_waits_total{how="slept"} 3
understudy_loop_waits_total{how="spin_caught"} 7
understudy_loop_waits_total{how="spin_missed"} 5
# HELP understudy_tx_buffer_waits_total Transmits that found a socket's send buffer full (a device queue held its frames) and waited for room.
# TYPE understudy_tx_buffer_waits_total counter
understudy_tx_buffer_waits_total 11
# HELP understudy_super_frames_total GRO/TSO super-frames received whole (--keep-offloads), each rewritten once for all its segments.
# TYPE understudy_super_frames_total counter
understudy_super_frames_total 13
# HELP understudy_pcap_dropped_frames_total Frames not written to the --pcap file: its buffer was full or no file was open.
# TYPE understudy_pcap_dropped_frames_total counter
understudy_pcap_dropped_frames_total 2
`
	names := []string{"understudy_bytes_total", "understudy_packets_total", "understudy_probes_total", "understudy_client_stall_seconds",
		"understudy_flows_unprotected", "understudy_server_drained", "understudy_server_active",
		"understudy_kernel_bypass_dropped_packets_total", "understudy_pcap_dropped_frames_total", "understudy_replayed_bytes_total",
		"understudy_loop_waits_total", "understudy_tx_buffer_waits_total", "understudy_super_frames_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// Every metric is there, with its number of series.
	series := map[string]int{
		"understudy_packets_total": 6, "understudy_bytes_total": 6, "understudy_events_total": 2, "understudy_flows": 2,
		"understudy_flows_protected": 1, "understudy_flows_unprotected": 2, "understudy_drops_total": 2,
		"understudy_failovers_total": 1, "understudy_failover_detection_seconds": 1, "understudy_client_stall_seconds": 1,
		"understudy_divergences_total": 1, "understudy_probes_total": 10, "understudy_probe_last_duration_seconds": 2,
		"understudy_server_up": 2, "understudy_server_active": 2, "understudy_server_drained": 2, "understudy_server_flows": 2,
		"understudy_kernel_bypass_installed": 1, "understudy_kernel_bypass_dropped_packets_total": 2,
		"understudy_kernel_forwarded_packets_total": 1, "understudy_ring_dropped_packets_total": 1,
		"understudy_pcap_frames_total": 1, "understudy_pcap_dropped_frames_total": 1, "understudy_pcap_rotations_total": 1,
		"understudy_pcap_errors_total": 1, "understudy_log_lines_suppressed_total": 1, "understudy_replayed_bytes_total": 1,
		"understudy_loop_waits_total": 3, "understudy_tx_buffer_waits_total": 1, "understudy_super_frames_total": 1,
	}
	total := 0
	for name, n := range series {
		if got := testutil.CollectAndCount(c, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
		total += n
	}
	if got := testutil.CollectAndCount(c); got != total {
		t.Errorf("%d series in all, want %d: a metric is missing from the list above", got, total)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	// Read at scrape time: a later snapshot shows.
	src.st.Failovers = 6
	later := `
# HELP understudy_failovers_total Takeovers of the active role, automatic and manual.
# TYPE understudy_failovers_total counter
understudy_failovers_total 6
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(later), "understudy_failovers_total"); err != nil {
		t.Fatal(err)
	}
	// Without --pcap there are no pcap series.
	src.st.Pcap = nil
	if n := testutil.CollectAndCount(c, "understudy_pcap_frames_total"); n != 0 {
		t.Errorf("pcap series without a pcap: %d", n)
	}
}

func TestTrafficStatus(t *testing.T) {
	var tr traffic
	tr[dirIn][legClient].packets, tr[dirIn][legClient].bytes = 2, 120
	tr[dirOut][legBackup].packets = 1
	got := tr.status()
	if len(got) != 6 || got[0] != (TrafficCount{"in", "client", 2, 120}) || got[5] != (TrafficCount{"out", "backup", 1, 0}) {
		t.Fatalf("%+v", got)
	}
	tr[dirIn][legOther].packets = 1
	if got := tr.status(); len(got) != 7 || got[3].Leg != "other" {
		t.Fatalf("other not listed once it counts: %+v", got)
	}
}
