package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"understudy/datapath"
)

func TestReportShutdown(t *testing.T) {
	st := datapath.Status{Flows: datapath.FlowCounts{Total: 5, Protected: 2, Unprotected: 3,
		ByState:        map[string]int{"established": 3, "closing": 0, "time_wait": 1, "closed": 1, "syn_sent": 0},
		UnprotectedWhy: map[string]int{"took_over": 2, "drained": 1}}, Failovers: 1}
	flows := []datapath.FlowInfo{
		{Client: netip.MustParseAddrPort("198.51.100.9:5000"), VIP: netip.MustParseAddrPort("192.0.2.100:80"), State: "established", Protection: "protected", Live: "primary", FromClient: 10, ToClient: 20},
		{Client: netip.MustParseAddrPort("198.51.100.10:5000"), VIP: netip.MustParseAddrPort("192.0.2.100:80"), State: "established", Protection: "unprotected", Why: "took_over", Live: "backup"},
		{Client: netip.MustParseAddrPort("198.51.100.2:7"), VIP: netip.MustParseAddrPort("192.0.2.100:80"), State: "established", Protection: "diverged", Why: "diverged", Live: "primary"},
		{Client: netip.MustParseAddrPort("198.51.100.3:7"), VIP: netip.MustParseAddrPort("192.0.2.100:80"), State: "time_wait", Protection: "protected", Live: "primary"},
		{Client: netip.MustParseAddrPort("198.51.100.4:7"), VIP: netip.MustParseAddrPort("192.0.2.100:80"), State: "closed", Protection: "unprotected", Why: "took_over", Live: "backup"},
	}
	cases := []struct {
		name    string
		limit   int
		clients []string // of the per-flow lines, in order
		more    float64  // the "not listed" line's count, 0 for none
	}{
		{"all listed", 100, []string{"198.51.100.2:7", "198.51.100.9:5000", "198.51.100.10:5000"}, 0},
		{"capped", 2, []string{"198.51.100.2:7", "198.51.100.9:5000"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			reportShutdown(slog.New(slog.NewJSONHandler(&buf, nil)), st, flows, tc.limit)
			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatal(err)
				}
				lines = append(lines, m)
			}
			sum := lines[0]
			if sum["msg"] != "understudy stopping: flows at shutdown" || sum["flows"] != 5.0 || sum["open"] != 3.0 ||
				sum["protected"] != 2.0 || sum["unprotected"] != 3.0 || sum["failovers"] != 1.0 {
				t.Errorf("summary %v", sum)
			}
			if bs, _ := sum["by_state"].(map[string]any); bs["established"] != 3.0 || bs["time_wait"] != 1.0 || len(bs) != 5 {
				t.Errorf("by_state %v", sum["by_state"])
			}
			if op, _ := sum["open_by_protection"].(map[string]any); op["protected"] != 1.0 || op["unprotected"] != 1.0 || op["diverged"] != 1.0 {
				t.Errorf("open_by_protection %v", sum["open_by_protection"])
			}
			if w, _ := sum["unprotected_why"].(map[string]any); w["took_over"] != 2.0 || w["drained"] != 1.0 {
				t.Errorf("unprotected_why %v", sum["unprotected_why"])
			}
			var got []string
			var more float64
			for _, l := range lines[1:] {
				switch l["msg"] {
				case "flow open at shutdown":
					got = append(got, l["client"].(string))
					if l["vip"] != "192.0.2.100:80" || l["state"] == nil || l["live"] == nil {
						t.Errorf("flow line %v", l)
					}
				case "more flows open at shutdown, not listed":
					more = l["not_listed"].(float64)
				default:
					t.Errorf("unexpected line %v", l)
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.clients, " ") || more != tc.more {
				t.Errorf("flow lines %v (+%v not listed), want %v (+%v)", got, more, tc.clients, tc.more)
			}
		})
	}
}
