package testbed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"understudy/failover"
)

// Failover integration tests (root): every fault class an operator meets, at
// every point of a connection's life, judged by the client's own view — curl
// completes on its one connection with the right bytes, and its capture shows
// no RST and no FIN before the reply's end. Stalls are logged, not asserted.

// failoverArgs probe every 10ms; the HTTP probe sees a hung server, whose
// kernel still completes the TCP probe's handshake. The 50ms probe timeout
// keeps a server slowed by the tests' own load (two cores shared by the
// client, both servers and the gateway) from being taken for a failed one:
// under wrk, probe latency reaches tens of milliseconds. A refused probe
// (crash) still fails at once; a silent host takes about three timeouts.
var failoverArgs = []string{"--probe-interval", "10ms", "--probe-timeout", "50ms", "--probe-misses", "3", "--probe-rise", "3", "--probe-http", "/index.html"}

// loadArgs tolerate more under wrk, which saturates both cores: probes then
// wait up to hundreds of milliseconds, and a false alarm on the backup would
// leave the flows unprotected when the primary really fails.
var loadArgs = []string{"--probe-interval", "10ms", "--probe-timeout", "100ms", "--probe-misses", "5", "--probe-rise", "3", "--probe-http", "/index.html"}

const (
	// faultAt is how far into a transfer the fault comes.
	faultAt = 500 * time.Millisecond
	// caseMaxTime bounds each transfer (curl --max-time, seconds): about
	// three times what a transfer takes, so a failover that never happens
	// fails the case instead of hanging the run.
	caseMaxTime = "6"
)

// upFailover builds a bed for failover tests. Missing tools fail the test.
func upFailover(t *testing.T) *Bed {
	t.Helper()
	return upFailoverWith(t, Options{})
}

// upFailoverWith is upFailover for a bed built with opts.
func upFailoverWith(t *testing.T, opts Options) *Bed {
	t.Helper()
	b := Up(t, opts)
	RequireTool(t, "tcpdump")
	if !b.Nginx {
		t.Fatal("nginx is not installed: apt-get install -y nginx-light (CI installs it)")
	}
	return b
}

// position is a point in a connection's life where a server fails.
type position struct {
	name string
	// faultFirst injects the fault and then starts the request at once,
	// before detection can have happened.
	faultFirst bool
	start      func(b *Bed) *Running
	// idle: the connection idles on purpose before its next request, so
	// the stall is measured from that request.
	idle bool
	// minReply is the bytes the VIP must send before a FIN (0: unknown).
	minReply int64
	// uri and bytes: the request the surviving server must have served
	// whole (uri "" checks the upload log instead).
	uri   string
	bytes int64
	// check checks what the client got.
	check func(t *testing.T, b *Bed, tr *Transfer, survivor Server)
}

const uploadSize = 8 << 20

var positions = []position{
	{
		name:       "handshake",
		faultFirst: true,
		start: func(b *Bed) *Running {
			return b.Background(func() (*Transfer, error) { return b.Download("/1k.bin", "--max-time", caseMaxTime) })
		},
		minReply: 1024, uri: "/1k.bin", bytes: 1024,
		check: func(t *testing.T, b *Bed, tr *Transfer, _ Server) {
			if tr.SHA256 != b.SHA256("1k.bin") {
				t.Errorf("1k.bin: %d bytes sha256 %s, want %s", tr.Bytes, tr.SHA256, b.SHA256("1k.bin"))
			}
		},
	},
	{
		name: "upload",
		start: func(b *Bed) *Running {
			return b.Background(func() (*Transfer, error) {
				return b.Upload("/upload", uploadSize, "--limit-rate", "4M", "--max-time", caseMaxTime)
			})
		},
		check: func(t *testing.T, b *Bed, tr *Transfer, survivor Server) {
			if tr.Reply == nil || tr.Reply.Bytes != uploadSize || tr.Reply.SHA256 != tr.SHA256 {
				t.Errorf("upload: sent %d bytes sha256 %s, reply %+v", tr.Bytes, tr.SHA256, tr.Reply)
			}
			want := UploadEntry{Kind: "upload", Bytes: uploadSize, SHA256: tr.SHA256}
			if !waitUpload(b, survivor, want, 5*time.Second) {
				t.Errorf("%s's upload log has no %+v: %+v", survivor, want, b.UploadLog(survivor))
			}
		},
	},
	{
		name: "download",
		start: func(b *Bed) *Running {
			return b.Background(func() (*Transfer, error) {
				return b.Download("/big.bin", "--limit-rate", "40M", "--max-time", caseMaxTime)
			})
		},
		minReply: 64 << 20, uri: "/big.bin", bytes: 64 << 20,
		check: func(t *testing.T, b *Bed, tr *Transfer, _ Server) {
			if tr.SHA256 != b.SHA256("big.bin") || tr.Bytes != 64<<20 {
				t.Errorf("big.bin: %d bytes sha256 %s, want %d bytes %s", tr.Bytes, tr.SHA256, 64<<20, b.SHA256("big.bin"))
			}
		},
	},
	{
		// Two requests on one connection, a second apart (curl --rate):
		// the fault comes while it idles.
		name: "idle keep-alive",
		start: func(b *Bed) *Running {
			return b.Background(func() (*Transfer, error) {
				return b.DownloadAll(nil, []string{"/1k.bin", "/index.html"}, "--rate", "1/s", "--max-time", caseMaxTime)
			})
		},
		idle: true, uri: "/index.html", // minReply: from the content, in survive
		check: func(t *testing.T, b *Bed, tr *Transfer, _ Server) {
			if want := b.ContentSHA256("1k.bin", "index.html"); tr.SHA256 != want {
				t.Errorf("1k.bin then index.html: %d bytes sha256 %s, want %s", tr.Bytes, tr.SHA256, want)
			}
		},
	},
}

// other is the server that survives when s fails.
func other(s Server) Server {
	if s == Pri {
		return Bak
	}
	return Pri
}

var failsName = map[Server]string{Pri: "primary fails", Bak: "backup fails"}

// TestFailover: each fault class, on the primary and then on the backup, at
// each position. One bed per fault class; each case has a gateway of its
// own, so it starts with the primary active and both servers healthy, and
// repairs its fault when it ends.
func TestFailover(t *testing.T) {
	for _, fault := range Faults {
		t.Run(fault.String(), func(t *testing.T) {
			eachPosition(t, upFailover(t), fault, failoverArgs, nil)
		})
	}
}

// eachPosition runs survive for every position, the primary failing and
// then the backup, each case with a gateway of its own started with args;
// check, if set, looks at the gateway's status after each case.
func eachPosition(t *testing.T, bed *Bed, fault Fault, args []string, check func(t *testing.T, pos position, st map[string]any)) {
	for _, failed := range []Server{Pri, Bak} {
		for _, pos := range positions {
			t.Run(failsName[failed]+"/"+pos.name, func(t *testing.T) {
				b := bed.For(t)
				gw := b.StartGateway(args...)
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
					}
				})
				survive(t, b, fault, failed, pos)
				if check == nil {
					return
				}
				st, err := b.Status()
				if err != nil {
					t.Fatal(err)
				}
				check(t, pos, st)
			})
		}
	}
}

// TestFailoverOffloads: with offloads on along the whole path and the
// gateway passing super-frames whole (--keep-offloads), each position
// survives a host loss of the primary and of the backup: the transfers
// check the bytes, and a super-frame rewritten wrongly would break them.
func TestFailoverOffloads(t *testing.T) {
	bed := upFailoverWith(t, Options{Offloads: true})
	eachPosition(t, bed, HostLoss, append([]string{"--keep-offloads"}, failoverArgs...), func(t *testing.T, pos position, st map[string]any) {
		if kept, _ := st["offloads_kept"].(bool); !kept {
			t.Errorf("status offloads_kept = %v, want true", st["offloads_kept"])
		}
		// Bulk in either direction comes as super-frames.
		loop, _ := st["loop"].(map[string]any)
		if sf, _ := loop["super_frames"].(float64); (pos.name == "upload" || pos.name == "download") && sf == 0 {
			t.Errorf("no super-frame passed in the %s (status loop %v)", pos.name, loop)
		}
	})
}

// survive runs one client transfer through a failure of server failed at
// pos and checks the client's view and the surviving server's. It returns
// the fault, still in place (the test's cleanup repairs it).
func survive(t *testing.T, b *Bed, fault Fault, failed Server, pos position) *Injected {
	t.Helper()
	survivor := other(failed)
	served0 := len(b.AccessLog(survivor))
	capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)

	var in *Injected
	var run *Running
	if pos.faultFirst {
		in = b.Inject(fault, failed)
		run = pos.start(b)
	} else {
		run = pos.start(b)
		time.Sleep(faultAt)
		if run.Done() {
			tr, err := run.Wait()
			t.Fatalf("the transfer ended before the fault (%+v, %v): slow it down", tr, err)
		}
		in = b.Inject(fault, failed)
	}
	tr, err := run.Wait()
	pkts := capture.Stop()

	since, minReply := time.Time{}, pos.minReply
	if pos.idle {
		// From the request the client sent after the fault.
		if next := pkts.From(ClientIP).To(VIP).Data().After(in.At); len(next) > 0 {
			since = next[0].Metadata().Timestamp
		}
		minReply = int64(len(mustRead(t, filepath.Join(b.WWW(), "1k.bin"))) + len(mustRead(t, filepath.Join(b.WWW(), "index.html"))))
	}
	v := pkts.ClientView(since, minReply)
	if err == nil {
		t.Logf("%s of the %s at %s: client stall %v (curl %v)", fault, failed, pos.name, v.Stall, tr.timeTotal())
	} else {
		t.Logf("%s of the %s at %s: the reply never completed (largest gap before it stopped: %v)", fault, failed, pos.name, v.Stall)
	}
	logGateway(t, b)

	if err != nil {
		t.Errorf("the client's transfer failed: %v", err)
	}
	if tr != nil {
		if tr.NumConnects != 1 {
			t.Errorf("curl opened %d connections, want 1", tr.NumConnects)
		}
		if err == nil {
			pos.check(t, b, tr, survivor)
		}
	}
	for _, p := range v.Problems() {
		t.Error("the client saw " + p)
	}
	// The survivor's log may trail the client's view, but only a reply
	// that reached the client is worth waiting for.
	wait := time.Duration(0)
	if err == nil {
		wait = 5 * time.Second
	}
	if pos.uri != "" && !servedSince(b, survivor, served0, pos.uri, pos.bytes, wait) {
		t.Errorf("%s's access log has no whole GET %s since the case began: %+v", survivor, pos.uri, b.AccessLog(survivor)[served0:])
	}
	return in
}

// timeTotal is curl's total time, or 0 without a transfer.
func (tr *Transfer) timeTotal() time.Duration {
	if tr == nil {
		return 0
	}
	return tr.TimeTotal
}

// servedSince waits for s to log, after its first n entries, a whole GET of
// uri from the client (bytes 0: any length), for up to timeout: a standby
// finishes its reply after the client has it.
func servedSince(b *Bed, s Server, n int, uri string, bytes int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		log := b.AccessLog(s)
		for _, e := range log[min(n, len(log)):] {
			if e.Remote == ClientIP && e.URI == uri && e.Status == 200 && (bytes == 0 || e.BodyBytes == bytes) {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitUpload waits for s's upload log to hold want.
func waitUpload(b *Bed, s Server, want UploadEntry, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		for _, e := range b.UploadLog(s) {
			if e == want {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logGateway logs what the gateway says of the last failover and the
// servers' roles; the fields may be missing from older gateways.
func logGateway(t *testing.T, b *Bed) {
	t.Helper()
	st, err := b.Status()
	if err != nil {
		t.Logf("gateway status: %v", err)
		return
	}
	pr, ph := ServerState(st, Pri)
	br, bh := ServerState(st, Bak)
	t.Logf("gateway: primary %s/%s, backup %s/%s, last failover %v", pr, ph, br, bh, LastFailover(st))
}

// TestFailoverRepeated: the primary fails and is repaired, and comes back as
// the standby; a connection opened after that survives a failure of the
// other server.
func TestFailoverRepeated(t *testing.T) {
	bed := upFailover(t)
	gw := bed.StartGateway(failoverArgs...)
	var download position
	for _, p := range positions {
		if p.name == "download" {
			download = p
		}
	}
	steps := []struct {
		fault  Fault
		failed Server
	}{
		{Crash, Pri},
		{HostLoss, Bak},
	}
	for _, s := range steps {
		ok := t.Run(fmt.Sprintf("%s of the %s", s.fault, s.failed), func(t *testing.T) {
			b := bed.For(t)
			in := survive(t, b, s.fault, s.failed, download)
			if t.Failed() {
				return
			}
			in.Repair()
			// Reintegration takes --probe-rise good probes.
			if err := b.WaitServerState(s.failed, "standby", "up", 5*time.Second); err != nil {
				t.Fatalf("the repaired %s: %v", s.failed, err)
			}
			if err := b.WaitServerState(other(s.failed), "active", "up", time.Second); err != nil {
				t.Fatalf("the survivor: %v", err)
			}
		})
		if !ok {
			t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
			return
		}
	}
}

// TestFailoverUnderLoad: 64 wrk connections for 20s, the primary failing at
// 10s: not one socket error, not one non-2xx reply, no RST to the client.
func TestFailoverUnderLoad(t *testing.T) {
	bed := upFailover(t)
	RequireTool(t, "wrk")
	for _, fault := range []Fault{Crash, HostLoss} {
		t.Run(fault.String(), func(t *testing.T) {
			b := bed.For(t)
			gw := b.StartGateway(loadArgs...)
			capture := b.StartTcpdump(b.Client(), "eth0", "tcp[tcpflags] & tcp-rst != 0")
			type result struct {
				r   *WrkResult
				err error
			}
			done := make(chan result, 1)
			go func() {
				r, err := b.Wrk(64, 20*time.Second, "/1k.bin")
				done <- result{r, err}
			}()
			time.Sleep(10 * time.Second)
			b.Inject(fault, Pri)
			res := <-done
			rsts := capture.Stop().ClientRSTs()
			logGateway(t, b)
			if res.err != nil {
				t.Fatal(res.err)
			}
			r := res.r
			t.Logf("wrk: %d requests, %.0f/s", r.Requests, r.RequestsPerS)
			st := gatewayStatus(t, b)
			ev := st.Packets.Events
			t.Logf("gateway: %d flows taken over, %d reset (%d diverged); reply blocks %d compared, %d differed, %d differences recovered from",
				ev["takeovers"], ev["flows_reset"], ev["divergences"], ev["blocks_compared"], ev["blocks_differed"], ev["substitutions"])
			for _, p := range st.Detection.Servers {
				t.Logf("%s: %d probe timeouts, %d excused (%d of them while only sending)", p.Name, p.Timeouts, p.BusyTimeouts, p.SendingTimeouts)
			}
			if r.Requests == 0 || r.SocketErrors.Total() != 0 || r.Non2xx != 0 {
				t.Errorf("wrk: %d requests, socket errors %+v, non-2xx %d\n%s", r.Requests, r.SocketErrors, r.Non2xx, r.Output)
			}
			if len(rsts) != 0 {
				t.Errorf("the client received %d RSTs:\n%s", len(rsts), rsts)
			}
			if t.Failed() {
				t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
			}
		})
	}
}

// TestFailoverTransaction: a transfer whose large body is still on its way
// when the primary fails gets exactly one receipt, and the backup's ledger
// is what the client was told: the receipt is its last line, nothing twice.
func TestFailoverTransaction(t *testing.T) {
	for _, fault := range Faults {
		// A bed each: a failed primary's ledger falls behind the backup's,
		// and the next transfer's replies would differ.
		t.Run(fault.String(), func(t *testing.T) {
			b := upFailover(t)
			gw := b.StartGateway(failoverArgs...)
			first, _, err := b.Transfer(TransferRequest{From: "alice", To: "bob", Amount: 100, Memo: "opening"})
			if err != nil || first.Seq != 1 {
				t.Fatalf("first transfer: %+v, %v", first, err)
			}
			waitLedger(t, b, Bak, 1)

			capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)
			req := TransferRequest{From: "bob", To: "carol", Amount: 4200, Memo: strings.Repeat("memo-", 6<<20/5)}
			var receipt *Receipt
			run := b.Background(func() (*Transfer, error) {
				r, tr, err := b.Transfer(req, "--limit-rate", "3M", "--max-time", caseMaxTime)
				receipt = r
				return tr, err
			})
			time.Sleep(faultAt)
			if run.Done() {
				t.Fatal("the transfer ended before the fault: slow it down")
			}
			in := b.Inject(fault, Pri)
			tr, err := run.Wait()
			v := capture.Stop().ClientView(time.Time{}, 0)
			t.Logf("%s of the primary mid-transfer: client stall %v", fault, v.Stall)
			logGateway(t, b)
			for _, p := range v.Problems() {
				t.Error("the client saw " + p)
			}
			if err != nil {
				t.Fatalf("the transfer failed: %v", err)
			}
			if tr.NumConnects != 1 {
				t.Errorf("curl opened %d connections, want 1", tr.NumConnects)
			}
			want := Receipt{Seq: 2, From: req.From, To: req.To, Amount: req.Amount, MemoSHA256: sha256Hex([]byte(req.Memo)), Raw: receipt.Raw}
			if *receipt != want {
				t.Errorf("receipt %+v, want %+v", *receipt, want)
			}
			ledger := waitLedger(t, b, Bak, 2)
			if len(ledger) != 2 || ledger[0] != *first || ledger[1] != *receipt {
				t.Errorf("the backup's ledger %+v, want the client's receipts [%+v %+v]", ledger, *first, *receipt)
			}
			// Whatever the failed primary did with the body, it never
			// recorded anything the client was not told; the check comes
			// after the repair, so a hung server that wakes is seen.
			in.Repair()
			pri := b.Ledger(Pri)
			for i, r := range pri {
				if i >= len(ledger) || r != ledger[i] {
					t.Errorf("the primary's ledger %+v is not a prefix of the backup's %+v", pri, ledger)
					break
				}
			}
			if t.Failed() {
				t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
			}
		})
	}
}

// waitLedger waits for s's ledger to have at least n receipts: a standby's
// reply is absorbed by the gateway, so it may write after the client has
// its receipt. It fails the test on duplicate or missing seqs.
func waitLedger(t *testing.T, b *Bed, s Server, n int) []Receipt {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := b.Ledger(s)
		if len(l) >= n || time.Now().After(deadline) {
			for i, r := range l {
				if r.Seq != int64(i+1) {
					t.Fatalf("%s's ledger line %d has seq %d: %+v", s, i+1, r.Seq, l)
				}
			}
			if len(l) < n {
				t.Fatalf("%s's ledger has %d receipts after 5s, want %d: %+v", s, len(l), n, l)
			}
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailoverDivergence: replies that differ only in their Date header
// fail over cleanly; replies that differ in length are reset, never
// spliced into a body that is neither server's.
func TestFailoverDivergence(t *testing.T) {
	bed := upFailover(t)

	for _, path := range []string{"/1k.bin", "/index.html"} {
		t.Run("date differs "+path, func(t *testing.T) {
			b := bed.For(t)
			// Probes slow enough that the backup's pause below is not a
			// failure: misses * interval = 5s.
			gw := b.StartGateway("--probe-interval", "100ms", "--probe-misses", "50", "--probe-rise", "3", "--probe-http", "/index.html")
			capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)
			pri0 := len(b.AccessLog(Pri))
			// The backup, paused, answers the first request over a second
			// after the primary: its Date header is certain to differ.
			b.StopServer(Bak)
			t.Cleanup(func() { b.ContServer(Bak) })
			run := b.Background(func() (*Transfer, error) {
				return b.DownloadAll(nil, []string{path, path}, "--rate", "20/m", "--max-time", "10")
			})
			time.Sleep(1200 * time.Millisecond)
			b.ContServer(Bak)
			time.Sleep(500 * time.Millisecond)
			if err := b.Failover(); err != nil {
				_, _ = run.Wait()
				t.Fatal(err)
			}
			switched := time.Now()
			tr, err := run.Wait()
			pkts := capture.Stop()
			var since time.Time
			if next := pkts.From(ClientIP).To(VIP).Data().After(switched); len(next) > 0 {
				since = next[0].Metadata().Timestamp
			}
			file := strings.TrimPrefix(path, "/")
			size := int64(len(mustRead(t, filepath.Join(b.WWW(), file))))
			v := pkts.ClientView(since, 2*size)
			t.Logf("manual failover between two requests: stall of the second %v", v.Stall)
			logGateway(t, b)
			if st, err := b.Status(); err == nil {
				pk, _ := st["packets"].(map[string]any)
				ev, _ := pk["events"].(map[string]any)
				t.Logf("gateway events: substitutions %v, divergences %v", ev["substitutions"], ev["divergences"])
			}
			if err != nil {
				t.Errorf("the client's requests failed: %v", err)
			} else if want := b.ContentSHA256(file, file); tr.SHA256 != want || tr.NumConnects != 1 {
				t.Errorf("two GET %s: sha256 %s over %d connections, want %s over 1", path, tr.SHA256, tr.NumConnects, want)
			}
			for _, p := range v.Problems() {
				t.Error("the client saw " + p)
			}
			// The backup shadows every request anyway; that the switch
			// happened shows in the primary, which lost the connection
			// before its second request.
			for _, e := range b.AccessLog(Pri)[pri0:] {
				if e.URI == path && e.ConnRequests == 2 {
					t.Errorf("the primary served the second request after the failover: %+v", e)
				}
			}
			if t.Failed() {
				t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
			}
		})
	}

	pri := mustRead(t, bed.OwnFile(Pri, "diverge.bin"))
	bak := mustRead(t, bed.OwnFile(Bak, "diverge.bin"))
	if len(pri) == len(bak) {
		t.Fatalf("diverge.bin is %d bytes on both servers: scripts/testbed.sh should make them differ", len(pri))
	}
	for _, fault := range []Fault{Crash, HostLoss} {
		t.Run("length differs/"+fault.String(), func(t *testing.T) {
			b := bed.For(t)
			gw := b.StartGateway(failoverArgs...)
			capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)
			var body bytes.Buffer
			run := b.Background(func() (*Transfer, error) {
				return b.DownloadAll(&body, []string{"/own/diverge.bin"}, "--limit-rate", "1M", "--max-time", caseMaxTime)
			})
			time.Sleep(faultAt)
			if run.Done() {
				t.Fatal("the download ended before the fault: slow it down")
			}
			b.Inject(fault, Pri)
			tr, err := run.Wait()
			pkts := capture.Stop()
			logGateway(t, b)
			got := body.Bytes()
			t.Logf("client: %d of the primary's %d bytes, curl: %v", len(got), len(pri), err)
			switch {
			case err == nil && bytes.Equal(got, pri):
				// curl's rate limit paces its reads, not the server: the
				// primary may have pushed its whole reply into the client's
				// receive buffer before the fault. Not spliced.
				t.Logf("the primary's whole reply reached the client before the fault")
			case err == nil:
				t.Errorf("curl completed /own/diverge.bin (%d bytes, HTTP %d): the reply was spliced from two servers", tr.Bytes, tr.HTTPCode)
			}
			if !bytes.HasPrefix(pri, got) {
				i := 0
				for i < len(got) && i < len(pri) && got[i] == pri[i] {
					i++
				}
				t.Errorf("the client's %d bytes depart from the primary's reply at byte %d: spliced", len(got), i)
			}
			if rsts := pkts.ClientRSTs(); len(rsts) == 0 {
				t.Errorf("no RST reached the client: a flow that cannot be saved must be reset (curl: %v)", err)
			}
			if t.Failed() {
				t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
			}
		})
	}
}

// TestFailoverLaggingBackup: a backup held far behind the primary (a rate
// limit on its link; the lead bound lets the primary run up to 128 KiB
// ahead) is compared by whole blocks, and every block of its replies holds
// a Last-Modified and ETag that differ from the primary's in equal length,
// as a Date header that ticked does. The flow looks diverged when the
// primary crashes; the takeover must wait for the backup to reach what the
// client has, where the replies agree, and the client's connection goes on.
func TestFailoverLaggingBackup(t *testing.T) {
	b := upFailover(t)
	RequireTool(t, "tc")
	const name, requests = "stamped.bin", 600
	body := bytes.Repeat([]byte("the same body on both servers\n"), 20)
	// nginx serves a reply of about 830 bytes: every 1 KiB block of the
	// stream holds both headers that differ.
	for i, s := range []Server{Pri, Bak} {
		path := b.OwnFile(s, name)
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
		mtime := time.Unix(1790000000+int64(i), 0)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	gw := b.StartGateway("--probe-interval", "100ms", "--probe-misses", "50", "--probe-rise", "3", "--probe-http", "/index.html")
	capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)
	b.MustRun(b.Backup(), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "4k", "limit", "1mb")
	// The limit is lifted by raising the rate: deleting the qdisc would drop
	// what it queued, bytes below what the client acknowledged that the
	// backup never sends again, and the comparison would stop there.
	unlimit := func() {
		b.MustRun(b.Backup(), "tc", "qdisc", "change", "dev", "eth0", "root", "tbf", "rate", "10gbit", "burst", "1mb", "limit", "1mb")
	}
	t.Cleanup(func() { _ = b.Run(b.Backup(), "tc", "qdisc", "del", "dev", "eth0", "root") })
	paths := make([]string, requests)
	for i := range paths {
		paths[i] = "/own/" + name
	}
	// 300 replies a second to the client, 150 to the backup's link: the
	// backup falls behind by some 60 KiB a second, under the lead bound.
	run := b.Background(func() (*Transfer, error) {
		return b.DownloadAll(nil, paths, "--rate", "300/s", "--max-time", "20")
	})
	// The fault comes once the flow looks diverged: the backup is more
	// than two blocks behind, compared by whole blocks.
	time.Sleep(500 * time.Millisecond)
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fl := flowsJSON(t, b)
		if len(fl) == 1 && fl[0].Protection == "diverged" {
			break
		}
		if run.Done() || time.Now().After(deadline) {
			t.Fatalf("the flow never looked diverged before the requests ended: %+v", fl)
		}
	}
	b.Inject(Crash, Pri)
	unlimit()
	tr, err := run.Wait()
	pkts := capture.Stop()
	logGateway(t, b)
	ev := gatewayStatus(t, b).Packets.Events
	t.Logf("gateway: %d flows taken over, %d reset (%d diverged); reply blocks %d compared, %d differed; %d of the backup's segments held below the splice",
		ev["takeovers"], ev["flows_reset"], ev["divergences"], ev["blocks_compared"], ev["blocks_differed"], ev["held_below_splice"])
	if err != nil {
		t.Errorf("the client's requests failed: %v", err)
	} else if want := int64(requests * len(body)); tr.Bytes != want || tr.NumConnects != 1 {
		t.Errorf("%d GETs: %d bytes over %d connections, want %d over 1", requests, tr.Bytes, tr.NumConnects, want)
	}
	if ev["takeovers"] != 1 || ev["divergences"] != 0 {
		t.Errorf("%d takeovers, %d divergences; want the one flow taken over, none diverged", ev["takeovers"], ev["divergences"])
	}
	if rsts := pkts.ClientRSTs(); len(rsts) != 0 {
		t.Errorf("the client received %d RSTs:\n%s", len(rsts), rsts)
	}
	if t.Failed() {
		t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestServerLinkLoss: the gateway's own server-side link loses its carrier
// for a moment during a download, which reports both servers down at once.
// The flows stay with the primary — no takeover by a backup that is down
// too — the download ends with every byte, and both servers come back once
// the link is up.
func TestServerLinkLoss(t *testing.T) {
	b := upFailover(t)
	startReady(t, b)
	// 64 MiB at 16 MB/s: about 4 s, the link lost 1 s in.
	run := b.Background(func() (*Transfer, error) {
		return b.Download("/big.bin", "--limit-rate", "16M", "--max-time", "60")
	})
	time.Sleep(time.Second)
	b.MustRun(b.Gateway(), "ip", "link", "set", ServerIface, "down")
	time.Sleep(200 * time.Millisecond)
	b.MustRun(b.Gateway(), "ip", "link", "set", ServerIface, "up")
	tr, err := run.Wait()
	if err != nil {
		t.Fatalf("download across the link loss: %v", err)
	}
	if want := b.SHA256("big.bin"); tr.SHA256 != want {
		t.Fatalf("download across the link loss: sha256 %s, want %s", tr.SHA256, want)
	}
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := json.Marshal(st["role_history"])
	if n, _ := st["failovers"].(float64); n != 0 || strings.Contains(string(hist), `"takeover"`) {
		t.Fatalf("%v failovers; role history %s; want none: the backup was down too", st["failovers"], hist)
	}
	if !strings.Contains(string(hist), `"standby-lost"`) || !strings.Contains(string(hist), `"service-down"`) {
		t.Errorf("role history %s, want the standby lost, then the service down", hist)
	}
	for _, s := range []Server{Pri, Bak} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, err := b.Status()
			if err != nil {
				t.Fatal(err)
			}
			if _, health := ServerState(st, s); health == "up" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not up 5 s after the link came back: %v", s, st["servers"])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// startReady starts a gateway with failoverArgs and extraArgs, logs its tail if the test
// fails, and waits until the primary is up and active and the backup up and
// standing by.
func startReady(t *testing.T, b *Bed, extraArgs ...string) {
	t.Helper()
	gw := b.StartGateway(append(failoverArgs[:len(failoverArgs):len(failoverArgs)], extraArgs...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log (tail):\n%s", gw.LogTail(40))
		}
	})
	for s, role := range map[Server]string{Pri: "active", Bak: "standby"} {
		if err := b.WaitServerState(s, role, "up", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHangUnderSlowDownload: a hung primary whose kernel goes on emptying
// full socket buffers to the client is taken for hung within about a
// second, not once its buffers have drained. Its probe timeouts are excused
// only while it answers clients; data that answers nothing excuses them for
// a second at most. The download survives the takeover whole.
// It runs with the default excuse of a second, and with --probe-busy-for
// 250ms.
func TestHangUnderSlowDownload(t *testing.T) {
	bed := upFailover(t)
	RequireTool(t, "tc")
	for _, tc := range []struct {
		name  string
		args  []string
		limit time.Duration // on the detection: the excuse, then three misses
	}{
		{"default", nil, 2 * time.Second},
		{"busy-for 250ms", []string{"--probe-busy-for", "250ms"}, 1250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) { hangUnderSlowDownload(t, bed.For(t), tc.args, tc.limit) })
	}
}

func hangUnderSlowDownload(t *testing.T, b *Bed, args []string, limit time.Duration) {
	// 8 MiB of send buffer (16 MiB to the kernel) drained at 2 MB/s, steadily:
	// the tbf paces the primary's link so that every probe's wait sees data.
	// Its queue holds 24 ms of it: a healthy primary's probe answers wait
	// behind no more, well within their 50 ms. With a queue of 500 ms,
	// BBR's start-up filled it, every probe timed out for as long, and a
	// 250 ms excuse for data alone ran out before the hang.
	b.FixSendBuffer(Pri, "8m")
	b.MustRun(b.Primary(), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "16mbit", "burst", "16k", "limit", "48kb")
	t.Cleanup(func() { _ = b.Run(b.Primary(), "tc", "qdisc", "del", "dev", "eth0", "root") })
	startReady(t, b, args...)
	const size = 16 << 20
	run := b.Background(func() (*Transfer, error) {
		return b.Download("/big.bin", "--range", fmt.Sprintf("0-%d", size-1), "--max-time", "60")
	})
	time.Sleep(2 * time.Second)
	if st := gatewayStatus(t, b); st.Failovers != 0 {
		t.Fatalf("a failover before the hang: %+v", st.LastFailover)
	}
	in := b.Inject(Hang, Pri)
	var took time.Duration
	for deadline := time.Now().Add(15 * time.Second); ; {
		st := gatewayStatus(t, b)
		if f := st.LastFailover; f != nil {
			took = f.At.Sub(in.At)
			p := st.Detection.Servers[failover.Primary]
			t.Logf("hang detected %v after SIGSTOP (%s, detected_ms %.1f); primary's excused timeouts %d, of them while only sending %d",
				took, f.Cause, f.DetectedMS, p.BusyTimeouts, p.SendingTimeouts)
			if f.Server != "primary" || st.Failovers != 1 {
				t.Errorf("failovers %d, the last of the %s, want one of the primary", st.Failovers, f.Server)
			}
			if p.SendingTimeouts == 0 {
				t.Errorf("no timeouts excused by data alone: the hung primary's kernel sent nothing, so this did not test the bound")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failover 15 s after the primary hung: %v", st.Servers)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if took > limit {
		t.Errorf("hang detected %v after SIGSTOP, want within %v (the excuse, then three misses)", took, limit)
	}
	tr, err := run.Wait()
	if err != nil {
		t.Fatalf("download across the hang: %v", err)
	}
	sum := sha256.Sum256(mustRead(t, filepath.Join(b.WWW(), "big.bin"))[:size])
	if want := hex.EncodeToString(sum[:]); tr.SHA256 != want || tr.Bytes != size || tr.NumConnects != 1 {
		t.Fatalf("download across the hang: %d bytes sha256 %s over %d connections, want %d bytes %s over one",
			tr.Bytes, tr.SHA256, tr.NumConnects, size, want)
	}
}
