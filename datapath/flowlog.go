package datapath

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"understudy/rewrite"
	"understudy/tcpstate"
)

// Per-flow and per-packet log lines go through one token bucket: a burst
// of logBurst lines, then logRate a second. A failover that touches ten
// thousand flows logs its summary line and the first few flows, not ten
// thousand lines; the rest are counted and reported as suppressed.
const (
	logRate  = 10
	logBurst = 50
)

// limiter is a token bucket on a monotonic clock in nanoseconds.
type limiter struct {
	rate, burst float64
	tokens      float64
	last        int64
	started     bool
	suppressed  uint64 // lines refused since the last one let through
	total       uint64 // lines refused ever
	lastLine    int64  // when the last line was let through
}

func newLimiter(rate, burst float64) limiter { return limiter{rate: rate, burst: burst} }

// allow takes a token if there is one; a refused line is counted.
func (l *limiter) allow(now int64) bool {
	if !l.started {
		l.started, l.tokens = true, l.burst
	} else if now > l.last {
		l.tokens = min(l.burst, l.tokens+float64(now-l.last)/float64(time.Second)*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		l.lastLine = now
		return true
	}
	l.suppress(1)
	return false
}

func (l *limiter) suppress(n uint64) {
	l.suppressed += n
	l.total += n
}

// takeSuppressed returns and clears the count of lines refused since the
// last line let through.
func (l *limiter) takeSuppressed() uint64 {
	n := l.suppressed
	l.suppressed = 0
	return n
}

// flowLine logs a line about one flow, rate-limited, naming the flow by
// its 4-tuple as the client sees it. The first line after some were
// refused says how many. Called with g.mu held.
func (g *Gateway) flowLine(now int64, level slog.Level, msg string, client, vip netip.AddrPort, attrs ...any) {
	if !g.logLimit.allow(now) {
		return
	}
	g.emitFlowLine(level, msg, client, vip, attrs...)
}

// emitFlowLine logs a flow line the limiter allowed.
func (g *Gateway) emitFlowLine(level slog.Level, msg string, client, vip netip.AddrPort, attrs ...any) {
	a := append([]any{"client", client, "vip", vip}, attrs...)
	if n := g.logLimit.takeSuppressed(); n > 0 {
		a = append(a, "suppressed", n)
	}
	g.log.Log(context.Background(), level, msg, a...)
}

// logEvents logs what the flow table noted since the last call. Called by
// the loop with g.mu held; costs a few instructions when nothing happened.
func (g *Gateway) logEvents(now int64) {
	lost := g.table.DrainEvents(func(ev tcpstate.FlowEvent) {
		client, vip := keyTuple(ev.Key)
		server := g.names[ev.Server&1]
		switch ev.Kind {
		case tcpstate.EventTakeover:
			g.flowLine(now, slog.LevelInfo, "flow taken over", client, vip, "failed", server, "live", g.names[1-ev.Server&1])
		case tcpstate.EventUnprotected:
			g.flowLine(now, slog.LevelWarn, "flow unprotected", client, vip, "reason", ev.Why, "lost", server)
		case tcpstate.EventReset:
			g.flowLine(now, slog.LevelWarn, "flow reset", client, vip, "reason", ev.Why, "failed", server)
		}
	})
	l := &g.logLimit
	l.suppress(lost)
	// Refused lines with none let through since: say so, once a second.
	if l.suppressed > 0 && now-l.lastLine >= int64(time.Second) {
		g.log.Warn("flow log lines suppressed by the rate limit", "suppressed", l.takeSuppressed())
		l.lastLine = now
	}
}

func keyTuple(k tcpstate.Key) (client, vip netip.AddrPort) {
	return netip.AddrPortFrom(netip.AddrFrom4(k.Client), k.CPort), netip.AddrPortFrom(netip.AddrFrom4(k.VIP), k.VPort)
}

// logAllowed takes a token for a line about a frame. The caller checks it
// before building the line's attributes, so that a storm of refused lines
// allocates nothing.
func (g *Gateway) logAllowed() bool { return g.logLimit.allow(int64(time.Since(g.start))) }

// frameLine logs a frame the loop could not send, once logAllowed said
// yes, naming its flow: a frame to a client goes from VIP:port to the
// client, one to a server from the client to the server's port, whose VIP
// the services say.
func (g *Gateway) frameLine(side tcpstate.Side, frame []byte, msg string, attrs ...any) {
	const ip, tcp = rewrite.EthLen, rewrite.EthLen + 20
	if len(frame) < tcp+4 {
		return
	}
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(frame[ip+12:ip+16])), uint16(frame[tcp])<<8|uint16(frame[tcp+1]))
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(frame[ip+16:ip+20])), uint16(frame[tcp+2])<<8|uint16(frame[tcp+3]))
	client, vip := dst, src
	if side == tcpstate.ServerSide {
		client, vip = src, netip.AddrPortFrom(netip.Addr{}, dst.Port())
		for _, s := range g.cfg.Services {
			if s.Port == dst.Port() {
				vip = netip.AddrPortFrom(netip.AddrFrom4(s.VIP), s.Port)
			}
		}
		attrs = append(attrs, "server", dst.Addr())
	}
	g.emitFlowLine(slog.LevelWarn, msg, client, vip, attrs...)
}
