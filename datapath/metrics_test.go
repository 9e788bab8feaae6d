package datapath

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeStatus struct{ st Status }

func (f *fakeStatus) Status() Status { return f.st }

func TestCollector(t *testing.T) {
	src := &fakeStatus{st: Status{
		Servers: []ServerStatus{{Name: "primary", Health: "down"}, {Name: "backup", Health: "up"}},
		Flows:   FlowCounts{ByState: map[string]int{"established": 3, "syn_sent": 1}},
		Packets: PacketCounts{Events: map[string]uint64{
			"client_segments": 10, "server_segments": 20, "to_client": 9, "to_primary": 8, "to_backup": 7, "divergences": 2,
		}},
		Drops:        map[string]uint64{"no_flow": 4, "parse_short": 1},
		KernelBypass: BypassStatus{Installed: true},
		Failovers:    5,
	}}
	c := NewCollector(src)
	want := `
# HELP understudy_divergences_total Flows reset at takeover because the servers' replies differed.
# TYPE understudy_divergences_total counter
understudy_divergences_total 2
# HELP understudy_drops_total Dropped frames and segments by reason.
# TYPE understudy_drops_total counter
understudy_drops_total{reason="no_flow"} 4
understudy_drops_total{reason="parse_short"} 1
# HELP understudy_failovers_total Takeovers of the active role, automatic and manual.
# TYPE understudy_failovers_total counter
understudy_failovers_total 5
# HELP understudy_flows Flows in the flow table by state.
# TYPE understudy_flows gauge
understudy_flows{state="established"} 3
understudy_flows{state="syn_sent"} 1
# HELP understudy_kernel_bypass_installed 1 if the nftables kernel-bypass table is installed.
# TYPE understudy_kernel_bypass_installed gauge
understudy_kernel_bypass_installed 1
# HELP understudy_packets_total TCP segments handled by the flow table, by direction (in, out) and leg (client, server, primary, backup).
# TYPE understudy_packets_total counter
understudy_packets_total{direction="in",leg="client"} 10
understudy_packets_total{direction="in",leg="server"} 20
understudy_packets_total{direction="out",leg="backup"} 7
understudy_packets_total{direction="out",leg="client"} 9
understudy_packets_total{direction="out",leg="primary"} 8
# HELP understudy_server_up 1 if the server's health probes pass, else 0.
# TYPE understudy_server_up gauge
understudy_server_up{server="backup"} 1
understudy_server_up{server="primary"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
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
}
