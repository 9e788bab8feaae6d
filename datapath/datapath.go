// Package datapath is the loop that joins the pieces: frames from the
// capture rings are parsed by rewrite, decided on by tcpstate, and the frames
// tcpstate emits are given Ethernet headers and sent by capture.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"understudy/capture"
	"understudy/failover"
	"understudy/pcaptap"
	"understudy/rewrite"
	"understudy/tcpstate"
)

// Config describes one gateway.
type Config struct {
	ClientIface, ServerIface string
	Services                 []tcpstate.Service
	Primary, Backup          netip.Addr
	Table                    tcpstate.Config
	Ring                     capture.RingConfig
	// VerifyChecksums drops frames whose checksums are wrong before they can
	// change any flow's state.
	VerifyChecksums bool
	// KeepOffloads leaves the interfaces' offloads on and passes GRO/TSO
	// super-frames through whole, with their checksums left to the kernel
	// (PACKET_VNET_HDR): headers are rewritten once per super-frame. The
	// rings' slots then hold 64 KiB frames (offloadFrameCount of them,
	// unless Ring says otherwise).
	KeepOffloads bool
	// Probe configures failure detection: interval (each probe's timeout
	// too), misses, rise, and an HTTP path (empty: TCP connect probes).
	Probe     failover.Config
	ProbeHTTP string
	// ProbeBusyFor bounds how long in a row a server's probe timeouts are
	// excused while it sends clients data but answers nothing
	// (failover.MonitorConfig.BusyFor; 0 is its default).
	ProbeBusyFor time.Duration
	Log          *slog.Logger
	// Pcap, if set, gets a copy of every frame received and sent.
	Pcap *pcaptap.Tap
}

// Drop reasons the loop itself counts, beside rewrite's and tcpstate's.
const (
	dropOversized  = iota // frame larger than the ring slot (offloads left on upstream)
	dropNoNeighbor        // next hop MAC not resolved yet
	dropTxError           // the kernel refused a frame
	dropServerMAC         // server-side frame whose source MAC is not its server's
	numLoopDrops
)

var loopDropNames = [numLoopDrops]string{"oversized", "no_neighbor", "tx_error", "server_mac_mismatch"}

// How the loop waited for frames before a round (LoopStatus).
const (
	waitSpinCaught = iota // spun after a round that moved frames, and one came
	waitSpinMissed        // spun after such a round, then slept in poll
	waitSlept             // the last round moved nothing: slept in poll at once
	numWaits
)

// Gateway runs the datapath for one client and one server interface.
type Gateway struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // held by the loop while it works; readers take it briefly
	// closeMu keeps Close from releasing the rings and the bypass tables
	// while a reader (status, metrics) that reads them outside mu runs;
	// closed tells such a reader they are gone.
	closeMu sync.RWMutex
	closed  bool
	table   *tcpstate.Table
	out     *tcpstate.Output
	pkt     rewrite.Packet
	start   time.Time

	rings          []*capture.Ring // [client, server]
	clientTx       *capture.Sender
	serverTx       *capture.Sender
	clientBatch    *capture.Batch // frames queued for clientTx
	serverBatch    *capture.Batch
	clientNeigh    *capture.Neighbors
	serverNeigh    *capture.Neighbors
	bypass         *capture.Bypass
	clientRx       uint64
	serverRx       uint64
	traffic        traffic
	servers        [2][4]byte // primary's and backup's addresses
	parseDrops     [rewrite.NumReasons]uint64
	loopDrops      [numLoopDrops]uint64
	superFrames    uint64 // GRO/TSO super-frames received whole (KeepOffloads)
	waits          [numWaits]uint64
	offloadChanged map[string][]string

	// learned maps a client to the source MAC of its last SYN: the next
	// hop back to it until the kernel's neighbour table has an entry (a
	// client that had our MAC cached never ARPed us).
	learned map[[4]byte][6]byte

	// lastData and lastAnswer mirror the table's LastData and LastAnswer
	// for the monitor's goroutines.
	lastData, lastAnswer [2]atomic.Int64

	mon          *failover.Monitor
	arb          *failover.Arbiter
	names        [2]string
	last         *Failover
	failovers    uint64 // takeovers carried out, automatic and manual
	evidenceSeen uint64
	droppedSeen  uint64  // the monitor's dropped transitions already recovered from
	drained      [2]bool // servers taken out of new flows by the operator
	detection    tcpstate.Histogram
	logLimit     limiter // per-flow and per-packet log lines
}

func addr4(a netip.Addr) [4]byte { return a.As4() }

// Open prepares the host: offloads off on both interfaces, the kernel-bypass
// table, capture rings with their filters, transmit sockets, and the servers'
// MAC addresses. Everything opened is closed again if a later step fails.
func Open(ctx context.Context, cfg Config) (g *Gateway, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	g = &Gateway{cfg: cfg, log: cfg.Log, start: time.Now(), offloadChanged: map[string][]string{},
		learned: map[[4]byte][6]byte{}, logLimit: newLimiter(logRate, logBurst)}
	defer func() {
		if err != nil {
			g.Close()
			g = nil
		}
	}()
	vips, ports := services(cfg.Services)
	servers := [][4]byte{addr4(cfg.Primary), addr4(cfg.Backup)}
	g.servers = [2][4]byte{servers[0], servers[1]}
	for _, ifname := range []string{cfg.ClientIface, cfg.ServerIface} {
		if cfg.KeepOffloads {
			if err := capture.CheckSuperFrameSize(ifname); err != nil {
				return nil, err
			}
			continue
		}
		changed, err := capture.DisableOffloads(ifname)
		if err != nil {
			return nil, err
		}
		g.offloadChanged[ifname] = changed
		if len(changed) > 0 {
			g.log.Info("offloads disabled so every frame fits the MTU and carries its own checksum",
				"iface", ifname, "features", changed)
		}
	}
	own, err := localAddrs()
	if err != nil {
		return nil, err
	}
	if stale, err := capture.BypassPresent(); err == nil && stale {
		g.log.Warn("replacing the kernel-bypass tables an earlier run left (it did not stop cleanly)",
			"tables", capture.BypassTable+", "+capture.WatchTable)
	}
	g.bypass, err = capture.InstallBypass(capture.BypassConfig{
		ClientIface: cfg.ClientIface, ServerIface: cfg.ServerIface,
		VIPs: vips, Servers: servers, Exclude: own, Ports: ports,
	})
	if err != nil {
		return nil, err
	}
	cf, err := capture.ClientFilter(vips, ports)
	if err != nil {
		return nil, err
	}
	sf, err := capture.ServerFilter(servers, ports, own)
	if err != nil {
		return nil, err
	}
	mtu := 0
	for _, name := range []string{cfg.ClientIface, cfg.ServerIface} {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("datapath: interface %s: %w", name, err)
		}
		mtu = max(mtu, ifi.MTU)
	}
	rc := ringConfig(cfg.Ring, cfg.KeepOffloads, mtu)
	cr, err := capture.OpenRing(cfg.ClientIface, cf, rc)
	if err != nil {
		return nil, err
	}
	g.rings = append(g.rings, cr)
	sr, err := capture.OpenRing(cfg.ServerIface, sf, rc)
	if err != nil {
		return nil, err
	}
	g.rings = append(g.rings, sr)
	if g.clientTx, err = capture.OpenSender(cfg.ClientIface); err != nil {
		return nil, err
	}
	if g.serverTx, err = capture.OpenSender(cfg.ServerIface); err != nil {
		return nil, err
	}
	if cfg.KeepOffloads {
		for _, tx := range []*capture.Sender{g.clientTx, g.serverTx} {
			if err := tx.KeepOffloads(); err != nil {
				return nil, err
			}
		}
		g.log.Info("offloads kept: super-frames pass whole, their checksums left to the kernel",
			"ring_slots", rc.FrameCount, "ring_slot_bytes", rc.FrameSize)
	}
	if g.clientNeigh, err = capture.NewNeighbors(ctx, cfg.ClientIface); err != nil {
		return nil, err
	}
	if g.serverNeigh, err = capture.NewNeighbors(ctx, cfg.ServerIface); err != nil {
		return nil, err
	}
	for _, s := range []netip.Addr{cfg.Primary, cfg.Backup} {
		if _, err := g.serverNeigh.Resolve(ctx, s.As4(), 3*time.Second); err != nil {
			// Not fatal: a server that is down now may come up later.
			g.log.Warn("server MAC not resolved yet", "server", s, "err", err)
		}
	}
	g.names = [2]string{"primary", "backup"}
	g.arb = failover.NewArbiter(g.names)
	g.mon, err = failover.NewMonitor(failover.MonitorConfig{
		Config:   cfg.Probe,
		Servers:  [2]netip.AddrPort{netip.AddrPortFrom(cfg.Primary, ports[0]), netip.AddrPortFrom(cfg.Backup, ports[0])},
		Names:    g.names,
		HTTPPath: cfg.ProbeHTTP,
		Iface:    cfg.ServerIface,
		Log:      g.log,
		Busy:     g.activity,
		BusyFor:  cfg.ProbeBusyFor,
	})
	if err != nil {
		return nil, err
	}
	tc := cfg.Table
	tc.Services = cfg.Services
	tc.Servers = [2][4]byte{addr4(cfg.Primary), addr4(cfg.Backup)}
	g.table = tcpstate.New(tc)
	// Room for a full-MTU frame, or a super-frame, plus the option space
	// Build reserves.
	frame := frameSize(g.clientTx.MTU(), g.serverTx.MTU()) + 64
	if cfg.KeepOffloads {
		frame = max(frame, capture.MaxSuperFrame+rewrite.EthLen+64)
	}
	g.out = tcpstate.NewOutput(frame)
	// A ring batch's output is sent with one sendmmsg per side, by the
	// loop itself: room for the frames a batch of segments usually makes (a
	// data segment makes one, a client ACK up to three). Handing batches
	// to a transmit goroutine per side, so that the receivers' softirq work
	// ran beside the loop, cost more in thread wake-ups than it gained.
	g.clientBatch = g.clientTx.NewBatch(2*batch, frame, func(f []byte, err error) { g.txDone(tcpstate.ClientSide, f, err) })
	g.serverBatch = g.serverTx.NewBatch(2*batch, frame, func(f []byte, err error) { g.txDone(tcpstate.ServerSide, f, err) })
	return g, nil
}

// ringConfig sizes the receive rings: slots that hold a whole frame of the
// larger interface MTU (a jumbo-frame link's full segments would otherwise
// arrive truncated and be dropped as oversized, every retransmission too),
// or a whole super-frame under KeepOffloads.
func ringConfig(rc capture.RingConfig, keepOffloads bool, mtu int) capture.RingConfig {
	if rc.FrameSize == 0 {
		rc.FrameSize = capture.DefaultFrameSize
	}
	rc.FrameSize = max(rc.FrameSize, capture.FrameSizeFor(mtu))
	if keepOffloads {
		rc.VnetHdr = true
		rc.FrameSize = max(rc.FrameSize, capture.FrameSizeFor(capture.MaxSuperFrame))
		if rc.FrameCount == 0 {
			rc.FrameCount = offloadFrameCount
		}
	}
	return rc
}

// frameSize is the largest frame either interface sends, plus the Ethernet header.
func frameSize(mtus ...int) int {
	m := 1500
	for _, v := range mtus {
		m = max(m, v)
	}
	return m + rewrite.EthLen
}

func services(ss []tcpstate.Service) (vips [][4]byte, ports []uint16) {
	seenVIP := map[[4]byte]bool{}
	seenPort := map[uint16]bool{}
	for _, s := range ss {
		if !seenVIP[s.VIP] {
			seenVIP[s.VIP] = true
			vips = append(vips, s.VIP)
		}
		if !seenPort[s.Port] {
			seenPort[s.Port] = true
			ports = append(ports, s.Port)
		}
	}
	return vips, ports
}

// Close releases everything Open acquired, the kernel-bypass table last so
// the host never answers handled traffic while the gateway still holds it.
func (g *Gateway) Close() error {
	g.closeMu.Lock()
	defer g.closeMu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	// No frame waits in a batch: every round of Run ends by sending them.
	for _, r := range g.rings {
		errs = append(errs, r.Close())
	}
	for _, s := range []*capture.Sender{g.clientTx, g.serverTx} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	for _, n := range []*capture.Neighbors{g.clientNeigh, g.serverNeigh} {
		if n != nil {
			n.Close()
		}
	}
	if g.bypass != nil {
		errs = append(errs, g.bypass.Remove())
	}
	return errors.Join(errs...)
}

// pollInterval bounds how late a timer fires when no traffic arrives.
const pollInterval = 2 * time.Millisecond

// spinFor is how long the loop watches the rings after its last frame
// before it sleeps in poll: the next segment of an exchange usually comes
// within it, and a wake-up from poll costs more. A loop woken by poll's
// timeout with nothing to do sleeps again at once: spinning after each of
// those wake-ups cost an idle gateway half of its CPU time.
const spinFor = 50 * time.Microsecond

// offloadFrameCount is the default number of ring slots under
// KeepOffloads: each holds a 64 KiB super-frame, 31 to a 2 MiB block, 32
// MiB per ring.
const offloadFrameCount = 16 * 31

// batch bounds the frames taken from one ring before the other gets a turn.
const batch = 64

// maxRounds bounds the batches of one loop iteration.
const maxRounds = 16

// Run moves frames until ctx is cancelled, and runs failure detection
// beside them.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	monErr := make(chan error, 1)
	go func() { monErr <- g.mon.Run(ctx) }()
	defer func() { cancel(); <-monErr }()
	moved := false // the last round handled frames: more may follow at once
	for ctx.Err() == nil {
		how := waitSlept
		if moved {
			how = waitSpinMissed
			if capture.Spin(g.rings, spinFor) {
				how = waitSpinCaught
			}
		}
		if how != waitSpinCaught {
			if err := capture.Wait(g.rings, g.waitFor()); err != nil {
				return fmt.Errorf("datapath: wait for frames: %w", err)
			}
		}
		g.mu.Lock()
		g.waits[how]++
		now := int64(time.Since(g.start))
		g.events(now)
		// Bounded, so that under a steady stream of frames the timers,
		// failover events and the monitor's view of which servers are busy
		// still come round every few milliseconds.
		moved = false
		for round := 0; round < maxRounds; round++ {
			if g.drain(0, now)+g.drain(1, now) == 0 {
				break
			}
			moved = true
		}
		for {
			g.out.Reset()
			more := g.table.Tick(now, g.out)
			g.flush()
			if !more {
				break
			}
		}
		g.transmit()
		g.logEvents(now)
		g.mu.Unlock()
	}
	return nil
}

// waitFor is how long the loop may wait for frames: pollInterval, or less
// when a held client ACK falls due sooner.
func (g *Gateway) waitFor() time.Duration {
	due := g.table.NextDue()
	if due == 0 {
		return pollInterval
	}
	return min(pollInterval, max(0, time.Duration(due-int64(time.Since(g.start)))))
}

// drain handles up to batch frames from ring side and returns how many.
func (g *Gateway) drain(side int, now int64) int {
	r := g.rings[side]
	n := 0
	for ; n < batch; n++ {
		fr, ok := r.Next()
		if !ok {
			break
		}
		g.handle(side, fr, now)
		r.Release()
	}
	// What the batch's segments deferred to its end: the ACKs that
	// shadow legs are owed, one per flow instead of one per segment.
	for more := n > 0; more; {
		g.out.Reset()
		more = g.table.Flush(g.out)
		g.flush()
	}
	g.transmit()
	if side == 1 && n > 0 {
		// Only server frames move these; the monitor's goroutines read
		// them while the loop runs on.
		for i := range g.lastData {
			g.lastData[i].Store(g.table.LastData(i))
			g.lastAnswer[i].Store(g.table.LastAnswer(i))
		}
	}
	return n
}

// activity is what server sent clients since a time, for the monitor's
// judgement of a probe that timed out.
func (g *Gateway) activity(server int, since time.Time) failover.Activity {
	after := func(last int64) bool { return last != 0 && g.start.Add(time.Duration(last)).After(since) }
	switch {
	case after(g.lastAnswer[server].Load()):
		return failover.Answering
	case after(g.lastData[server].Load()):
		return failover.Sending
	}
	return failover.Quiet
}

func (g *Gateway) handle(side int, fr capture.Frame, now int64) {
	g.received(side, fr)
	if fr.WireLen > len(fr.Data) {
		g.loopDrops[dropOversized]++
		return
	}
	if r := g.pkt.Parse(fr.Data, fr.CsumPartial, g.verifies(fr)); r != rewrite.OK {
		g.parseDrops[r]++
		return
	}
	if g.cfg.KeepOffloads {
		g.pkt.KeepOffloads(fr.GSOSize)
	}
	if side == 1 && !g.fromServerMAC(fr.Data) {
		g.loopDrops[dropServerMAC]++
		return
	}
	g.out.Reset()
	if side == 0 {
		if g.pkt.Flags()&(rewrite.SYN|rewrite.ACK) == rewrite.SYN {
			g.learnClient(fr.Data)
		}
		g.table.HandleClient(now, &g.pkt, g.out)
	} else {
		g.table.HandleServer(now, &g.pkt, g.out)
	}
	g.flush()
}

// verifies reports whether fr's checksums are to be verified. A
// super-frame's are not: the kernel coalesced it from segments it had
// validated, and fraglist GRO leaves the first segment's checksum in the
// field (the frame is not CHECKSUM_PARTIAL); Finish writes the partial sum
// the frame leaves with anyway.
func (g *Gateway) verifies(fr capture.Frame) bool {
	return g.cfg.VerifyChecksums && fr.GSOSize == 0
}

// fromServerMAC reports whether a parsed server-side frame comes from the
// MAC the neighbour table holds for its source address: another host on the
// LAN claiming to be a server is not one. The gateway cannot have sent a
// server anything before resolving it, so a miss is no reply either.
func (g *Gateway) fromServerMAC(frame []byte) bool {
	mac, ok := g.serverNeigh.Lookup([4]byte(frame[rewrite.EthLen+12 : rewrite.EthLen+16]))
	return ok && [6]byte(frame[6:12]) == mac
}

// flush queues what tcpstate emitted for transmit, each frame with the
// Ethernet header of its next hop.
func (g *Gateway) flush() {
	for _, o := range g.out.Frames {
		f := o.Frame
		if len(f) < rewrite.EthLen+20 {
			g.loopDrops[dropTxError]++
			continue
		}
		var dst [4]byte
		copy(dst[:], f[rewrite.EthLen+16:rewrite.EthLen+20])
		tx, neigh, q := g.serverTx, g.serverNeigh, g.serverBatch
		if o.Side == tcpstate.ClientSide {
			tx, neigh, q = g.clientTx, g.clientNeigh, g.clientBatch
		}
		mac, ok := neigh.Lookup(dst)
		if !ok && o.Side == tcpstate.ClientSide {
			mac, ok = g.learned[dst]
		}
		if !ok {
			g.loopDrops[dropNoNeighbor]++
			if g.logAllowed() {
				g.frameLine(o.Side, f, "frame dropped: next hop's MAC not resolved yet", "next_hop", netip.AddrFrom4(dst))
			}
			continue
		}
		src := tx.MAC()
		copy(f[0:6], mac[:])
		copy(f[6:12], src[:])
		f[12], f[13] = 0x08, 0x00
		q.AddOffload(f, o.Offload)
	}
	g.out.Reset()
}

// transmit sends the queued frames, one system call per side; each frame's
// fate is counted (txDone) before it returns.
func (g *Gateway) transmit() {
	g.clientBatch.Flush()
	g.serverBatch.Flush()
}

// txDone counts a frame the kernel took, or the drop of one it refused.
func (g *Gateway) txDone(side tcpstate.Side, f []byte, err error) {
	if err != nil {
		g.loopDrops[dropTxError]++
		if g.logAllowed() {
			g.frameLine(side, f, "frame dropped: the kernel refused it", "err", err)
		}
		return
	}
	g.sent(side, f)
}

// maxLearned bounds the learned next hops; the map starts afresh when full.
const maxLearned = 1 << 16

// learnClient remembers the previous hop of a client's SYN and asks the
// neighbour cache to resolve the client, so its SYN-ACK has a next hop.
func (g *Gateway) learnClient(frame []byte) {
	src := [4]byte(frame[rewrite.EthLen+12 : rewrite.EthLen+16])
	if _, ok := g.clientNeigh.Lookup(src); ok {
		return
	}
	if len(g.learned) >= maxLearned {
		clear(g.learned)
	}
	g.learned[src] = [6]byte(frame[6:12])
}
