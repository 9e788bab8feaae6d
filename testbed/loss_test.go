package testbed

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
)

// lossRate is the random loss of every TCP packet in and out of the
// namespaces a case names (iptables statistic: this kernel has no netem).
const lossRate = 0.02

// TestLoss: 2% random loss on the server LAN (both servers' every TCP
// packet, probes too) and, separately, on the client's link; a 64 MiB
// download and an 8 MiB upload through the VIP each complete whole on one
// connection with no reset, with and without a crash of the primary in the
// middle.
func TestLoss(t *testing.T) {
	bed := upFailover(t)
	where := []struct {
		name string
		ns   []string
	}{
		{"server LAN", []string{bed.Primary(), bed.Backup()}},
		{"client link", []string{bed.Client()}},
	}
	transfers := []struct {
		name  string
		start func(b *Bed, port int) *Running
		check func(t *testing.T, b *Bed, tr *Transfer, survivor Server)
	}{
		{"download", func(b *Bed, port int) *Running {
			return b.Background(func() (*Transfer, error) {
				return b.Download("/big.bin", "--limit-rate", "24M", "--local-port", strconv.Itoa(port), "--max-time", "60")
			})
		}, func(t *testing.T, b *Bed, tr *Transfer, _ Server) {
			if tr.SHA256 != b.SHA256("big.bin") || tr.Bytes != 64<<20 {
				t.Errorf("big.bin: %d bytes sha256 %s", tr.Bytes, tr.SHA256)
			}
		}},
		{"upload", func(b *Bed, port int) *Running {
			return b.Background(func() (*Transfer, error) {
				return b.Upload("/upload", uploadSize, "--limit-rate", "4M", "--local-port", strconv.Itoa(port), "--max-time", "60")
			})
		}, func(t *testing.T, b *Bed, tr *Transfer, survivor Server) {
			if tr.Reply == nil || tr.Reply.Bytes != uploadSize || tr.Reply.SHA256 != tr.SHA256 {
				t.Errorf("upload: sent %d bytes sha256 %s, reply %+v", tr.Bytes, tr.SHA256, tr.Reply)
			}
			want := UploadEntry{Kind: "upload", Bytes: uploadSize, SHA256: tr.SHA256}
			if !waitUpload(b, survivor, want, 10*time.Second) {
				t.Errorf("%s's upload log has no %+v", survivor, want)
			}
		}},
	}
	port := 45500
	for _, w := range where {
		for _, crash := range []bool{false, true} {
			for _, x := range transfers {
				port++
				name := fmt.Sprintf("%s/%s", w.name, x.name)
				if crash {
					name += " with a primary crash"
				}
				t.Run(name, func(t *testing.T) {
					b := bed.For(t)
					b.StartGateway(loadArgs...)
					capture := b.StartTcpdump(b.Client(), "eth0", "tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0 and host "+VIP)
					for _, ns := range w.ns {
						b.Loss(ns, lossRate)
					}
					defer func() {
						for _, ns := range w.ns {
							b.Loss(ns, 0)
						}
					}()
					run := x.start(b, port)
					survivor := Pri
					if crash {
						time.Sleep(time.Second)
						if run.Done() {
							t.Fatal("the transfer ended before the crash")
						}
						in := b.Inject(Crash, Pri)
						survivor = Bak
						defer in.Repair()
					}
					tr, err := run.Wait()
					var lost int64
					for _, ns := range w.ns {
						lost += b.LossDropped(ns)
					}
					if err != nil {
						t.Fatalf("%v", err)
					}
					if lost == 0 {
						t.Error("the loss rules dropped nothing")
					}
					if tr.NumConnects != 1 {
						t.Errorf("%d connections, want 1", tr.NumConnects)
					}
					x.check(t, b, tr, survivor)
					rsts := capture.Stop().Opened().ClientRSTs().Filter(func(p gopacket.Packet) bool {
						tcp := TCP(p)
						return tcp != nil && int(tcp.DstPort) == port
					})
					if len(rsts) > 0 {
						t.Errorf("the client received resets:\n%s", rsts)
					}
					st := gatewayStatus(t, b)
					t.Logf("%v at %.0f%% loss: %d bytes in %v, %d packets dropped; failovers %d, flows unprotected %d",
						x.name, lossRate*100, tr.Bytes, tr.TimeTotal.Round(time.Millisecond), lost, st.Failovers,
						st.Packets.Events["flows_unprotected"])
					if crash && st.Failovers == 0 {
						t.Error("the primary's crash caused no failover")
					}
					if !crash && st.Failovers != 0 {
						t.Errorf("loss alone caused %d failovers: %+v", st.Failovers, st.LastFailover)
					}
				})
			}
		}
	}
}

// TestLostHandshakeToBackup: the backup's first SYN-ACK of a connection (in
// one case) or the client's first SYN to the backup (in the other) is lost
// on the server LAN. The gateway sends the SYN to the backup again, so the
// connection starts protected and survives the primary's crash in the middle
// of its download.
func TestLostHandshakeToBackup(t *testing.T) {
	bed := upFailover(t)
	port := 45600
	for _, c := range []struct {
		name  string
		chain string
		match []string
	}{
		{"SYN-ACK lost", "OUTPUT", []string{"--sport", "80", "--tcp-flags", "SYN,ACK", "SYN,ACK"}},
		{"SYN lost", "INPUT", []string{"--dport", "80", "--tcp-flags", "SYN,ACK", "SYN"}},
	} {
		port++
		t.Run(c.name, func(t *testing.T) {
			b := bed.For(t)
			b.StartGateway(failoverArgs...)
			// Only this connection's first SYN (or SYN-ACK): the health
			// probes' handshakes come from the gateway's own address.
			peer := "-s"
			if c.chain == "OUTPUT" {
				peer = "-d"
			}
			rule := append([]string{c.chain, "-p", "tcp", peer, ClientIP}, c.match...)
			rule = append(rule, "-m", "statistic", "--mode", "nth", "--every", "1000", "--packet", "0", "-j", "DROP")
			b.MustRun(b.Backup(), "iptables", append([]string{"-I"}, rule...)...)
			defer b.Run(b.Backup(), "iptables", append([]string{"-D"}, rule...)...)
			capture := b.StartTcpdump(b.Client(), "eth0", "tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0 and host "+VIP)
			run := b.Background(func() (*Transfer, error) {
				return b.Download("/big.bin", "--limit-rate", "24M", "--local-port", strconv.Itoa(port), "--max-time", "30")
			})
			time.Sleep(time.Second)
			if run.Done() {
				t.Fatal("the transfer ended before the crash")
			}
			in := b.Inject(Crash, Pri)
			defer in.Repair()
			tr, err := run.Wait()
			if err != nil {
				t.Fatalf("%v", err)
			}
			if tr.SHA256 != b.SHA256("big.bin") || tr.Bytes != 64<<20 || tr.NumConnects != 1 {
				t.Errorf("big.bin: %d bytes sha256 %s on %d connections", tr.Bytes, tr.SHA256, tr.NumConnects)
			}
			if rsts := capture.Stop().Opened().ClientRSTs(); len(rsts) > 0 {
				t.Errorf("the client received resets:\n%s", rsts)
			}
			st := gatewayStatus(t, b)
			ev := st.Packets.Events
			t.Logf("syn_retries %d, synack_timeouts %d, takeovers %d, flows unprotected %d",
				ev["syn_retries"], ev["synack_timeouts"], ev["takeovers"], ev["flows_unprotected"])
			if ev["syn_retries"] < 1 || ev["synack_timeouts"] != 0 || ev["flows_unprotected"] != 0 || ev["takeovers"] != 1 {
				t.Error("want the SYN sent to the backup again, no timeout, and the flow taken over protected")
			}
		})
	}
}

// TestBackupLossRecoveredBySACK: client segments lost on the way to the
// backup alone. The primary acknowledges them, the backup reports each hole
// with a duplicate ACK and SACK, and the gateway passes both to the client,
// which resends at once (SACK recovery), not after its retransmission
// timeout: passed on without SACK, a Linux client ignored the duplicate and
// waited for the timeout on every loss, and an upload took 20 times as
// long as with the same loss on the primary's side.
func TestBackupLossRecoveredBySACK(t *testing.T) {
	b := upFailover(t)
	b.StartGateway(failoverArgs...)
	rule := []string{"INPUT", "-p", "tcp", "-s", ClientIP, "--dport", "80", "-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP"}
	b.MustRun(b.Backup(), "iptables", append([]string{"-I"}, rule...)...)
	defer b.Run(b.Backup(), "iptables", append([]string{"-D"}, rule...)...)
	before := b.Nstat(b.Client())
	tr, err := b.Upload("/upload", uploadSize, "--max-time", "60")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Reply == nil || tr.Reply.Bytes != uploadSize || tr.Reply.SHA256 != tr.SHA256 {
		t.Fatalf("upload: sent %d bytes sha256 %s, reply %+v", tr.Bytes, tr.SHA256, tr.Reply)
	}
	after := b.Nstat(b.Client())
	lost := b.LossDropped(b.Backup())
	timeouts := after["TcpExtTCPTimeouts"] - before["TcpExtTCPTimeouts"]
	recoveries := after["TcpExtTCPSackRecovery"] - before["TcpExtTCPSackRecovery"]
	t.Logf("%d bytes in %v; %d client segments lost to the backup; the client's retransmission timeouts %d, SACK recoveries %d",
		tr.Bytes, tr.TimeTotal.Round(time.Millisecond), lost, timeouts, recoveries)
	if lost < 10 {
		t.Fatalf("the loss rule dropped %d segments, too few to tell", lost)
	}
	if recoveries == 0 || int64(timeouts)*3 > lost {
		t.Errorf("%d timeouts and %d SACK recoveries for %d losses: want the losses recovered by SACK, not by timeouts", timeouts, recoveries, lost)
	}
}
