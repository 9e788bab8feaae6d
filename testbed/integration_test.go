package testbed

import (
	"encoding/json"
	"testing"
	"time"

	"understudy/datapath"
)

// kernelDropsWatched are the backup-side drops a replicating gateway causes
// when it gets sequence, timestamp or ack translation wrong.
var kernelDropsWatched = []string{
	"TCP_ACK_UNSENT_DATA", "TCP_RFC7323_PAWS", "TCP_RFC7323_TSECR", "TCP_INVALID_ACK_SEQUENCE",
}

func gatewayStatus(t *testing.T, b *Bed) datapath.Status {
	t.Helper()
	raw, err := b.StatusJSON()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var st datapath.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("decode status: %v\n%s", err, raw)
	}
	return st
}

// TestReplicatingDatapath runs real nginx on both servers and real curl and
// wrk on the client through understudy, and checks the client's view, both
// servers' view and the kernels' view.
func TestReplicatingDatapath(t *testing.T) {
	b := Up(t, Options{})
	if !b.Nginx {
		t.Fatal("nginx is not installed: apt-get install -y nginx-light (CI installs it)")
	}
	RequireTool(t, "wrk")
	// This test is about replication, not detection: probes that tolerate
	// a machine saturated by wrk keep a slow answer from failing a server.
	gw := b.StartGateway(loadArgs...)
	defer gw.Stop()

	clientCap := b.StartTcpdump(b.Client(), "eth0", "icmp or tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0")
	nstatBefore := map[Server]map[string]uint64{Pri: b.Nstat(b.Primary()), Bak: b.Nstat(b.Backup())}
	drops := WatchDrops(t, kernelDropsWatched...)

	// With no frames to move, the loop sleeps in poll at every wake-up and
	// never spins (spinning after each timeout cost an idle gateway half of
	// its CPU time); it spins after rounds that moved frames.
	idle := gatewayStatus(t, b).Loop
	time.Sleep(500 * time.Millisecond)
	t.Run("idle loop sleeps without spinning", func(t *testing.T) {
		l := gatewayStatus(t, b).Loop
		if spun := l.SpinCaught + l.SpinMissed - idle.SpinCaught - idle.SpinMissed; spun != 0 {
			t.Errorf("the idle loop spun %d times in 500 ms", spun)
		}
		if slept := l.Slept - idle.Slept; slept < 25 {
			t.Errorf("the idle loop slept %d times in 500 ms; its poll times out every few milliseconds", slept)
		}
	})

	t.Run("download 64MiB", func(t *testing.T) {
		tr, err := b.Download("/big.bin")
		if err != nil {
			t.Fatal(err)
		}
		if tr.SHA256 != b.SHA256("big.bin") || tr.Bytes != 64<<20 || tr.NumConnects != 1 {
			t.Fatalf("big.bin through the VIP: %d bytes sha256 %s over %d connections; want %d bytes %s over 1",
				tr.Bytes, tr.SHA256, tr.NumConnects, 64<<20, b.SHA256("big.bin"))
		}
		t.Logf("64 MiB in %v (%.0f MB/s)", tr.TimeTotal, tr.mbps())
		for _, s := range []Server{Pri, Bak} {
			if !served(b, s, "/big.bin", 64<<20) {
				t.Errorf("%s's access log has no whole GET /big.bin: %+v", s, b.AccessLog(s))
			}
		}
	})

	t.Run("busy loop spins", func(t *testing.T) {
		if l := gatewayStatus(t, b).Loop; l.SpinCaught == idle.SpinCaught {
			t.Errorf("no frame caught while spinning during a download: %+v", l)
		}
	})

	t.Run("upload 16MiB reaches both servers whole", func(t *testing.T) {
		const size = 16 << 20
		tr, err := b.Upload("/upload", size)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Reply == nil || tr.Reply.Bytes != size || tr.Reply.SHA256 != tr.SHA256 {
			t.Fatalf("upload: sent %d bytes sha256 %s, reply %+v", tr.Bytes, tr.SHA256, tr.Reply)
		}
		want := UploadEntry{Kind: "upload", Bytes: size, SHA256: tr.SHA256}
		for _, s := range []Server{Pri, Bak} {
			if got := b.WaitUploadLog(s, 1, 5*time.Second); len(got) != 1 || got[0] != want {
				t.Errorf("%s's upload log %+v, want [%+v]", s, got, want)
			}
		}
	})

	const wrkConns = 64
	t.Run("wrk 64 connections 10s", func(t *testing.T) {
		r, err := b.Wrk(wrkConns, 10*time.Second, "/1k.bin")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("wrk: %d requests, %.0f/s", r.Requests, r.RequestsPerS)
		if r.Requests == 0 || r.SocketErrors.Total() != 0 || r.Non2xx != 0 {
			t.Fatalf("wrk: %d requests, socket errors %+v, non-2xx %d\n%s", r.Requests, r.SocketErrors, r.Non2xx, r.Output)
		}
	})

	t.Run("both servers served every request", func(t *testing.T) {
		// The backup's last responses complete a moment after the client has
		// its answer: wait for the logs to agree.
		deadline := time.Now().Add(10 * time.Second)
		var np, nb int
		fromClient := func(s Server) int {
			n := 0
			for _, e := range b.AccessLog(s) {
				if e.Remote == ClientIP {
					n++ // the gateway's own health probes come from its address
				}
			}
			return n
		}
		for {
			np, nb = fromClient(Pri), fromClient(Bak)
			if np == nb && np > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		// wrk stops by resetting its connections, each with a request in
		// flight: a server may read the reset before that request, and
		// then never logs it. Nothing else may differ.
		if d := np - nb; np == 0 || d > wrkConns || d < -wrkConns {
			t.Fatalf("primary logged %d requests, backup %d (at most %d may differ, one per wrk connection)", np, nb, wrkConns)
		}
		t.Logf("primary logged %d requests, backup %d", np, nb)
	})

	st := gatewayStatus(t, b)
	t.Run("backup kernel accepted every segment", func(t *testing.T) {
		for _, s := range []Server{Pri, Bak} {
			after := b.Nstat(b.NS(s))
			for _, c := range []string{"TcpExtTSEcrRejected", "TcpExtPAWSEstab", "TcpExtPAWSActive", "TcpExtPAWSOldAck"} {
				if d := after[c] - nstatBefore[s][c]; d != 0 {
					t.Errorf("%s: %s grew by %d", s, c, d)
				}
			}
		}
		for reason, n := range drops.Counts() {
			if n != 0 {
				t.Errorf("kernels dropped %d segments for %s", n, reason)
			}
		}
	})

	t.Run("client saw no reset and no ICMP error", func(t *testing.T) {
		pkts := clientCap.Stop()
		if len(pkts.TCP()) == 0 {
			t.Fatal("the client capture saw no handshakes")
		}
		if rsts := pkts.ClientRSTs(); len(rsts) != 0 {
			t.Errorf("the client received %d RSTs:\n%s", len(rsts), rsts)
		}
		if icmp := pkts.ClientICMPErrors(); len(icmp) != 0 {
			t.Errorf("the client received %d ICMP errors:\n%s", len(icmp), icmp)
		}
	})

	t.Run("host kernel never forwarded handled traffic", func(t *testing.T) {
		kb := st.KernelBypass
		if !kb.Installed || kb.KernelForwarded != 0 || kb.ClientDropped == 0 || kb.ServerDropped == 0 {
			t.Fatalf("kernel bypass: %+v", kb)
		}
	})

	t.Logf("gateway: flows %+v drops %v; backups cut off while draining after a client's reset: %d",
		st.Flows, nonZero(st.Drops), st.Packets.Events["drain_cutoffs"])
	if st.Flows.Unprotected != 0 {
		t.Errorf("%d flows lost their backup leg", st.Flows.Unprotected)
	}
}

// served waits for s to log a whole GET of uri from the client: the
// backup finishes a reply after the client has it from the primary.
func served(b *Bed, s Server, uri string, bytes int64) bool {
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range b.AccessLog(s) {
			if e.Remote == ClientIP && e.URI == uri && e.Status == 200 && e.BodyBytes == bytes {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
