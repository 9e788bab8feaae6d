package tcpstate

import (
	"bytes"
	"testing"

	"understudy/rewrite"
)

// TestFlowEvents: the changes of a flow's life worth a log line are
// recorded with its key, in order, and read once.
func TestFlowEvents(t *testing.T) {
	reply := bytes.Repeat([]byte("0123456789"), 400)
	cases := []struct {
		name string
		act  func(b *bed)
		want []FlowEvent // Key filled in below
	}{
		{"primary fails", func(b *bed) { b.tab.ServerDown(b.now, 0, "probe") },
			[]FlowEvent{{Kind: EventTakeover, Server: 0}}},
		{"backup fails", func(b *bed) { b.tab.ServerDown(b.now, 1, "probe") },
			[]FlowEvent{{Kind: EventUnprotected, Why: "standby_failed", Server: 1}}},
		{"backup fails, then the primary", func(b *bed) {
			b.tab.ServerDown(b.now, 1, "probe")
			b.tab.ServerDown(b.now, 0, "probe")
		}, []FlowEvent{{Kind: EventUnprotected, Why: "standby_failed", Server: 1}, {Kind: EventReset, Why: "no_shadow", Server: 0}}},
		{"backup resets", func(b *bed) {
			b.feed(false, b.fromServer(backupIP, b.bISN+1001, 0, rewrite.RST, 0, 0, 0), nil)
		}, []FlowEvent{{Kind: EventUnprotected, Why: "backup_rst", Server: 1}}},
		{"backup resets, then the primary", func(b *bed) {
			b.feed(false, b.fromServer(backupIP, b.bISN+1001, 0, rewrite.RST, 0, 0, 0), nil)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1001, 0, rewrite.RST, 0, 0, 0), nil)
		}, []FlowEvent{{Kind: EventUnprotected, Why: "backup_rst", Server: 1}, {Kind: EventReset, Why: "server_rst", Server: 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := midReply(t, isns[0], reply, 1000)
			if lost := b.tab.DrainEvents(func(ev FlowEvent) { t.Fatalf("event before any change: %+v", ev) }); lost != 0 {
				t.Fatalf("%d lost", lost)
			}
			tc.act(b)
			var got []FlowEvent
			b.tab.DrainEvents(func(ev FlowEvent) { got = append(got, ev) })
			if len(got) != len(tc.want) {
				t.Fatalf("events %+v, want %+v", got, tc.want)
			}
			for i, w := range tc.want {
				w.Key = b.flow().Key()
				if got[i] != w {
					t.Errorf("event %d: %+v, want %+v", i, got[i], w)
				}
			}
			if n := b.tab.DrainEvents(func(ev FlowEvent) { t.Errorf("read twice: %+v", ev) }); n != 0 {
				t.Errorf("%d lost", n)
			}
		})
	}
}

func TestFlowEventsBounded(t *testing.T) {
	tab := New(Config{})
	f := &Flow{key: Key{CPort: 1}}
	for i := 0; i < maxEvents+5; i++ {
		tab.note(f, EventTakeover, "", 0)
	}
	n := 0
	if lost := tab.DrainEvents(func(FlowEvent) { n++ }); lost != 5 || n != maxEvents {
		t.Fatalf("read %d, lost %d; want %d and 5", n, lost, maxEvents)
	}
	if a := testing.AllocsPerRun(100, func() { tab.note(f, EventReset, "diverged", 1); tab.DrainEvents(func(FlowEvent) {}) }); a != 0 {
		t.Fatalf("events allocate %v times", a)
	}
}

// TestResetSignalsOnlyFromProtectedFlows: the live server's reset is a
// failure signal (the datapath feeds primary_rsts to its detector) only on
// a flow the shadow could carry on. A server alone on a flow — drained, or
// its backup lost — resets connections as servers do, and its reset goes to
// the client without counting against it.
func TestResetSignalsOnlyFromProtectedFlows(t *testing.T) {
	reply := bytes.Repeat([]byte("0123456789"), 400)
	cases := []struct {
		name        string
		backupFirst bool
		wantSignals uint64
		wantToCli   bool
	}{
		{"protected", false, 1, false},
		{"alone after the backup's reset", true, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := midReply(t, isns[0], reply, 1000)
			if tc.backupFirst {
				b.feed(false, b.fromServer(backupIP, b.bISN+1001, 0, rewrite.RST, 0, 0, 0), nil)
			}
			out := b.feed(false, b.fromServer(primaryIP, b.pISN+1001, 0, rewrite.RST, 0, 0, 0), nil)
			toCli := false
			for _, s := range out {
				toCli = toCli || s.side == ClientSide && s.tcp.RST
			}
			if n := b.tab.Stats.Counters[PrimaryRSTs]; n != tc.wantSignals || toCli != tc.wantToCli {
				t.Fatalf("primary_rsts %d, reset to the client %v; want %d, %v", n, toCli, tc.wantSignals, tc.wantToCli)
			}
		})
	}
}
