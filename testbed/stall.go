package testbed

import (
	"fmt"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The client's view of a failover, from a capture in the client namespace
// (filter "tcp and host " + VIP): how long it waited, and whether the VIP
// ever ended a connection before its reply was whole.

// PayloadLen is the TCP payload length of p, from the IP header (the
// capture keeps headers only), or 0.
func PayloadLen(p gopacket.Packet) int {
	ip, tcp := ipv4(p), TCP(p)
	if ip == nil || tcp == nil {
		return 0
	}
	return max(0, int(ip.Length)-int(ip.IHL)*4-int(tcp.DataOffset)*4)
}

// Data keeps TCP segments that carry payload.
func (ps Packets) Data() Packets {
	return ps.Filter(func(p gopacket.Packet) bool { return PayloadLen(p) > 0 })
}

// After keeps packets captured at or after t.
func (ps Packets) After(t time.Time) Packets {
	return ps.Filter(func(p gopacket.Packet) bool { return !p.Metadata().Timestamp.Before(t) })
}

// Stall is the longest the client waited on the VIP.
type Stall struct {
	Gap   time.Duration // longest interval without a segment from the VIP
	Start time.Time     // when that interval began
}

func (s Stall) String() string {
	if s.Start.IsZero() {
		return "no segments from the VIP"
	}
	return fmt.Sprintf("%v from %s", s.Gap.Round(time.Microsecond), s.Start.Format("15:04:05.000000"))
}

// Stall measures the largest gap between consecutive segments from the VIP
// to the client, data or acknowledgements (an upload sees only those), from
// since up to the VIP's last data segment: after that the reply is whole and
// silence is the client's own business. A zero since means the client's
// first segment to the VIP (its SYN), so a handshake that waits counts; for
// a keep-alive connection that idles on purpose, pass the moment the client
// sent its next request. While the client advertises a zero window the VIP
// may not send, so that wait is the client's too: a gap is counted from
// the moment the window reopened. A window smaller than one of the VIP's
// segments is as shut: a sender that avoids silly windows (RFC 9293
// §3.8.6.2.1, as Linux does) waits for a full segment's room or for its
// persist timer, at least 200 ms, before it sends into it. (A reply's last,
// shorter segment may go into a window too small for a full one; a stall
// just there is not counted.)
func (ps Packets) Stall(since time.Time) Stall {
	tcp := ps.TCP()
	if since.IsZero() {
		if toVIP := tcp.From(ClientIP).To(VIP); len(toVIP) > 0 {
			since = toVIP[0].Metadata().Timestamp
		}
	}
	fromVIP := tcp.From(VIP).To(ClientIP)
	data := fromVIP.Data()
	if len(data) == 0 {
		return Stall{}
	}
	end := data[len(data)-1].Metadata().Timestamp
	if since.IsZero() {
		since = fromVIP[0].Metadata().Timestamp
	}
	var s Stall
	prev := since
	shut := false // the client's last segment left no room for a segment
	// The client's window scale: offered in its SYN, in force once the
	// VIP's SYN-ACK offers one too (RFC 7323 §2.2).
	var offered, wscale uint8
	var mss uint32 // the largest segment the VIP sent so far
	for _, p := range tcp {
		ts := p.Metadata().Timestamp
		if ts.After(end) {
			break
		}
		ip, t := ipv4(p), TCP(p)
		if ip.SrcIP.String() == ClientIP {
			if t.SYN {
				offered, _ = windowScale(t)
				wscale = 0
			}
			open := uint32(t.Window)<<wscale >= max(mss, 1) || t.SYN || t.RST
			if shut && open && ts.After(prev) {
				prev = ts
			}
			shut = !open
			continue
		}
		if _, ok := windowScale(t); t.SYN && ok {
			wscale = offered // both SYNs offered a scale
		}
		// From the IP header: the capture keeps only the headers.
		mss = max(mss, uint32(ip.Length)-uint32(ip.IHL)*4-uint32(t.DataOffset)*4)
		if ts.Before(since) {
			continue
		}
		if gap := ts.Sub(prev); !shut && (gap > s.Gap || s.Start.IsZero()) {
			s = Stall{Gap: gap, Start: prev}
		}
		prev = ts
	}
	return s
}

// EarlyFINs are FINs from the VIP to the client that came before the end of
// the reply on their connection: sent before that connection's last data
// segment from the VIP, at a sequence number below the end of its data, or,
// when the capture holds the connection's SYN-ACK, less than minReply bytes
// into the VIP's stream (the caller knows how long the bodies are, so a
// reply cut short by a FIN shows even when no data follows it; 0: unknown).
// A FIN after the whole reply is an orderly close.
func (ps Packets) EarlyFINs(minReply int64) Packets {
	type conn struct {
		lastData int    // index of the last data segment
		dataEnd  uint32 // highest seq+len of data
		hasData  bool
		isn      uint32 // the VIP's initial sequence number
		hasISN   bool
	}
	fromVIP := ps.From(VIP).To(ClientIP).TCP()
	conns := map[layers.TCPPort]*conn{}
	for i, p := range fromVIP {
		tcp := TCP(p)
		c := conns[tcp.DstPort]
		if c == nil {
			c = &conn{lastData: -1}
			conns[tcp.DstPort] = c
		}
		if tcp.SYN {
			c.isn, c.hasISN = tcp.Seq, true
		}
		if n := PayloadLen(p); n > 0 {
			end := tcp.Seq + uint32(n)
			if !c.hasData || int32(end-c.dataEnd) > 0 {
				c.dataEnd = end
			}
			c.hasData, c.lastData = true, i
		}
	}
	var early Packets
	for i, p := range fromVIP {
		tcp := TCP(p)
		if !tcp.FIN {
			continue
		}
		c := conns[tcp.DstPort]
		// A FIN's own data comes before it in the stream.
		finSeq := tcp.Seq + uint32(PayloadLen(p))
		switch {
		case i < c.lastData,
			c.hasData && int32(finSeq-c.dataEnd) < 0,
			c.hasISN && int64(finSeq-c.isn-1) < minReply:
			early = append(early, p)
		}
	}
	return early
}

// ClientView is what a capture in the client namespace says about a
// connection that must survive a failover.
type ClientView struct {
	RSTs      Packets // resets from the VIP on connections opened in the capture: there must be none
	EarlyFINs Packets // FINs before the reply's end: there must be none
	Stall     Stall
	Segments  int // from the VIP, to tell an empty capture
}

// ClientView sums up the capture for the failover checks; see Stall for
// since and EarlyFINs for minReply.
func (ps Packets) ClientView(since time.Time, minReply int64) ClientView {
	return ClientView{
		RSTs:      ps.Opened().From(VIP).ClientRSTs(),
		EarlyFINs: ps.EarlyFINs(minReply),
		Stall:     ps.Stall(since),
		Segments:  len(ps.From(VIP).To(ClientIP).TCP()),
	}
}

// Problems lists what the client should not have seen, or nil.
func (v ClientView) Problems() []string {
	var out []string
	if v.Segments == 0 {
		out = append(out, "the capture has no segments from the VIP")
	}
	if len(v.RSTs) > 0 {
		out = append(out, fmt.Sprintf("%d RSTs from the VIP:\n%s", len(v.RSTs), v.RSTs))
	}
	if len(v.EarlyFINs) > 0 {
		out = append(out, fmt.Sprintf("%d FINs from the VIP before the reply ended:\n%s", len(v.EarlyFINs), v.EarlyFINs))
	}
	return out
}

// Opened keeps the packets of connections whose client SYN the capture
// holds. A gateway started afresh resets the connections it does not know:
// an earlier test's, whose server still sends a segment, get a reset that
// is no fault of the transfer under test.
func (ps Packets) Opened() Packets {
	open := map[layers.TCPPort]bool{}
	for _, p := range ps.From(ClientIP) {
		if tcp := TCP(p); tcp != nil && tcp.SYN && !tcp.ACK {
			open[tcp.SrcPort] = true
		}
	}
	return ps.Filter(func(p gopacket.Packet) bool {
		tcp := TCP(p)
		if tcp == nil {
			return false
		}
		if ip := ipv4(p); ip != nil && ip.SrcIP.String() == ClientIP {
			return open[tcp.SrcPort]
		}
		return open[tcp.DstPort]
	})
}

// windowScale is the shift a SYN's window scale option offers (RFC 7323),
// and whether it has one.
func windowScale(t *layers.TCP) (shift uint8, ok bool) {
	for _, o := range t.Options {
		if o.OptionType == layers.TCPOptionKindWindowScale && len(o.OptionData) == 1 {
			return min(o.OptionData[0], 14), true
		}
	}
	return 0, false
}
