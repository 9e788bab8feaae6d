package testbed

import (
	"context"
	"os"
	"testing"
	"time"
)

// Soak parameters: US_SOAK (a duration) shortens or lengthens the run.
const (
	soakDefault = 5 * time.Minute
	soakEvery   = 30 * time.Second
	soakConns   = 32
	// soakConnAge recycles each client's connection well within a failover
	// period. A flow whose server failed goes on unprotected on the other
	// (a repaired server protects new flows only), so a connection that
	// lived through the next failover, of that other server, would be
	// reset: no gateway can save a connection both its servers lost.
	soakConnAge  = 10 * time.Second
	soakRSSSlack = 32 << 20 // bytes the gateway's RSS may grow from start to end (1.3 MiB was seen)
)

// TestSoak: 5 minutes of load from 32 keep-alive clients that check every
// body's sha256 and count every failure (no retries), each recycling its
// connection every 10 s, with a failover every 30 s that alternates between
// the servers (the active one fails: crash, then host loss, in turn), each
// repaired and back as standby before the next. Zero socket errors, zero
// corrupt bodies, the flow table empty once the load stops, the gateway's
// RSS stable.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: 5 minutes")
	}
	d := soakDefault
	if v := os.Getenv("US_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("US_SOAK=%q: %v", v, err)
		}
	}
	b := upFailover(t)
	gw := b.StartGateway(loadArgs...)
	pid := gw.Cmd.Process.Pid
	want := map[string]string{"/1k.bin": b.SHA256("1k.bin"), "/index.html": b.SHA256("index.html")}

	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(d))
	defer cancel()
	done := make(chan *LoadResult, 1)
	go func() { done <- b.Load(ctx, LoadOptions{Conns: soakConns, MaxConnAge: soakConnAge}, want) }()
	time.Sleep(5 * time.Second) // warm: connections open, the heap settled
	rssStart := rss(t, pid)

	active := Pri
	faults := []Fault{Crash, HostLoss}
	failovers := 0
	for k := 1; ; k++ {
		at := start.Add(time.Duration(k) * soakEvery)
		if at.After(start.Add(d - 10*time.Second)) {
			break
		}
		time.Sleep(time.Until(at))
		f := faults[(k-1)%len(faults)]
		in := b.Inject(f, active)
		standby := other(active)
		if err := b.WaitServerState(standby, "active", "up", 5*time.Second); err != nil {
			t.Errorf("failover %d (%s of %s): %v", k, f, active, err)
			in.Repair()
			break
		}
		failovers++
		in.Repair()
		if err := b.WaitServerState(active, "standby", "up", 10*time.Second); err != nil {
			t.Errorf("failover %d: the repaired %s: %v", k, active, err)
			break
		}
		t.Logf("failover %d at %v: %s of %s; %s active, %s standby again", k, time.Since(start).Round(time.Second), f, active, standby, active)
		active = standby
	}
	res := <-done
	rssEnd := rss(t, pid)
	t.Logf("soak %v: %d bodies verified (%v), %d corrupt, %d errors, %d connections, %d failovers; gateway RSS %d KiB at start, %d KiB at end",
		d, res.Requests, res.ByPath, res.Corrupt, res.Errors, res.Connects, failovers, rssStart>>10, rssEnd>>10)
	ev := gatewayStatus(t, b).Packets.Events
	t.Logf("gateway: %d flows taken over, %d reset, %d unprotected; %d SYNs sent again, %d servers' older connections reset, %d challenge ACKs",
		ev["takeovers"], ev["flows_reset"], ev["flows_unprotected"], ev["syn_retries"], ev["stale_conns_reset"], ev["challenge_acks"])
	if res.Requests == 0 || res.Errors != 0 || res.Corrupt != 0 {
		t.Errorf("load: %d good, %d errors, %d corrupt; first: %s", res.Requests, res.Errors, res.Corrupt, res.FirstError)
	}
	if want := int(d/soakEvery) - 1; failovers < want {
		t.Errorf("%d failovers, want %d", failovers, want)
	}
	if rssEnd-rssStart > soakRSSSlack {
		t.Errorf("gateway RSS grew from %d KiB to %d KiB", rssStart>>10, rssEnd>>10)
	}
	// Closed flows linger TIME_WAIT (30 s) to absorb retransmissions.
	deadline := time.Now().Add(45 * time.Second)
	for {
		st := gatewayStatus(t, b)
		if st.Flows.Total == 0 {
			t.Logf("flow table empty %v after the load", 45*time.Second-time.Until(deadline).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d flows left 45s after the load: %v", st.Flows.Total, st.Flows.ByState)
			break
		}
		time.Sleep(time.Second)
	}
}
