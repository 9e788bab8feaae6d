package datapath

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"understudy/rewrite"
	"understudy/tcpstate"
)

func TestLimiter(t *testing.T) {
	ms := int64(time.Millisecond)
	cases := []struct {
		name        string
		rate, burst float64
		at          []int64 // times of the lines, ns
		want        string  // + let through, - refused
	}{
		{"burst then refused", 10, 3, []int64{0, 0, 0, 0, 0}, "+++--"},
		{"refills at the rate", 10, 2, []int64{0, 0, 0, 50 * ms, 100 * ms, 150 * ms, 200 * ms}, "++--+-+"},
		{"refill capped at the burst", 10, 2, []int64{0, 0, 10000 * ms, 10000 * ms, 10000 * ms}, "++++-"},
		{"a clock that steps back takes nothing", 10, 1, []int64{100 * ms, 0, 0}, "+--"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(tc.rate, tc.burst)
			var got strings.Builder
			for _, at := range tc.at {
				if l.allow(at) {
					got.WriteByte('+')
				} else {
					got.WriteByte('-')
				}
			}
			if got.String() != tc.want {
				t.Fatalf("%s, want %s", got.String(), tc.want)
			}
			refused := uint64(strings.Count(tc.want, "-"))
			if l.total != refused || l.takeSuppressed() != refused || l.takeSuppressed() != 0 {
				t.Fatalf("suppressed count %d, want %d", l.total, refused)
			}
		})
	}
}

// logGateway is a Gateway logging JSON into buf, with a flow table.
func logGateway(buf *bytes.Buffer, burst float64) *Gateway {
	g := bareGateway()
	g.log = slog.New(slog.NewJSONHandler(buf, nil))
	g.logLimit = newLimiter(1, burst)
	g.cfg.Services = []tcpstate.Service{{VIP: [4]byte{192, 0, 2, 100}, Port: 80}}
	return g
}

func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %q", err, l)
		}
		out = append(out, m)
	}
	return out
}

// Flow lines carry the 4-tuple; beyond the burst they are counted, and the
// next line let through, or a summary a second later, says how many.
func TestFlowLines(t *testing.T) {
	var buf bytes.Buffer
	g := logGateway(&buf, 2)
	client, vip := keyTuple(tcpstate.Key{Client: [4]byte{198, 51, 100, 7}, CPort: 40001, VIP: [4]byte{192, 0, 2, 100}, VPort: 80})
	for i := 0; i < 5; i++ {
		g.flowLine(0, slog.LevelWarn, "flow unprotected", client, vip, "reason", "backup_rst")
	}
	lines := logLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("%d lines, want the burst of 2", len(lines))
	}
	for _, l := range lines {
		if l["client"] != "198.51.100.7:40001" || l["vip"] != "192.0.2.100:80" || l["reason"] != "backup_rst" || l["suppressed"] != nil {
			t.Errorf("line %v", l)
		}
	}
	buf.Reset()
	g.logEvents(int64(2 * time.Second)) // nothing new: the summary of the 3 refused
	g.flowLine(int64(3*time.Second), slog.LevelInfo, "flow taken over", client, vip)
	lines = logLines(t, &buf)
	if len(lines) != 2 || lines[0]["msg"] != "flow log lines suppressed by the rate limit" || lines[0]["suppressed"] != 3.0 ||
		lines[1]["msg"] != "flow taken over" || lines[1]["suppressed"] != nil {
		t.Fatalf("lines %v", lines)
	}
	if g.logLimit.total != 3 {
		t.Errorf("total suppressed %d", g.logLimit.total)
	}

	// A frame the loop could not send names its flow too.
	buf.Reset()
	s := rewrite.Spec{Src: [4]byte{198, 51, 100, 7}, Dst: [4]byte{10, 0, 0, 11}, SrcPort: 40001, DstPort: 80, Flags: rewrite.ACK, WScale: -1}
	frame := make([]byte, 200)
	n := rewrite.Build(frame, &s, &rewrite.Packet{})
	g.logLimit = newLimiter(1, 1)
	if !g.logAllowed() {
		t.Fatal("first frame line refused")
	}
	g.frameLine(tcpstate.ServerSide, frame[:n], "frame dropped: the kernel refused it")
	// Refused lines cost no allocation: the attributes are never built.
	if a := testing.AllocsPerRun(100, func() {
		if g.logAllowed() {
			g.frameLine(tcpstate.ServerSide, frame[:n], "frame dropped", "next_hop", rewrite.Seq(1))
		}
	}); a != 0 {
		t.Errorf("a refused frame line allocates %v times", a)
	}
	lines = logLines(t, &buf)
	if len(lines) != 1 || lines[0]["client"] != "198.51.100.7:40001" || lines[0]["vip"] != "192.0.2.100:80" || lines[0]["server"] != "10.0.0.11" {
		t.Fatalf("frame line %v", lines)
	}
}
