package datapath

import (
	"understudy/capture"
	"understudy/pcaptap"
	"understudy/rewrite"
	"understudy/tcpstate"
)

// Legs of the traffic counters: who the frame came from or went to.
const (
	legClient = iota
	legPrimary
	legBackup
	legOther // a server-side frame of neither server (the capture filter should leave none)
	numLegs
)

var legNames = [numLegs]string{"client", "primary", "backup", "other"}

// Directions of the traffic counters.
const (
	dirIn  = iota // received by the gateway
	dirOut        // sent by the gateway
)

var dirNames = [2]string{"in", "out"}

// traffic counts frames and their bytes on the wire (Ethernet header
// included) per direction and leg.
type traffic [2][numLegs]struct{ packets, bytes uint64 }

// serverLeg names the server whose address sits at off in an Ethernet frame.
func (g *Gateway) serverLeg(frame []byte, off int) int {
	if len(frame) < rewrite.EthLen+20 {
		return legOther
	}
	a := [4]byte(frame[rewrite.EthLen+off : rewrite.EthLen+off+4])
	switch a {
	case g.servers[0]:
		return legPrimary
	case g.servers[1]:
		return legBackup
	}
	return legOther
}

// received counts a frame from ring side (0 clients, 1 servers) and hands
// it to the pcap tap. Per frame: counting only, no allocation.
func (g *Gateway) received(side int, fr capture.Frame) {
	leg := legClient
	if side == 0 {
		g.clientRx++
	} else {
		g.serverRx++
		leg = g.serverLeg(fr.Data, 12) // source address
	}
	if fr.GSOSize > 0 {
		g.superFrames++
	}
	c := &g.traffic[dirIn][leg]
	c.packets++
	c.bytes += uint64(max(fr.WireLen, len(fr.Data)))
	if g.cfg.Pcap != nil {
		g.cfg.Pcap.Frame(pcaptap.In, fr.Data, fr.WireLen)
	}
}

// sent counts a frame the kernel took for sending and hands it to the tap.
func (g *Gateway) sent(side tcpstate.Side, frame []byte) {
	leg := legClient
	if side == tcpstate.ServerSide {
		leg = g.serverLeg(frame, 16) // destination address
	}
	c := &g.traffic[dirOut][leg]
	c.packets++
	c.bytes += uint64(len(frame))
	if g.cfg.Pcap != nil {
		g.cfg.Pcap.Frame(pcaptap.Out, frame, len(frame))
	}
}

// TrafficCount is one direction and leg of Status.Traffic.
type TrafficCount struct {
	Direction string `json:"direction"` // in (received) or out (sent)
	Leg       string `json:"leg"`       // client, primary, backup (or other)
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"` // Ethernet frames, headers included
}

// trafficStatus lists the counters; "other" only when it counted something.
func (t *traffic) status() []TrafficCount {
	var out []TrafficCount
	for d := range t {
		for l := range t[d] {
			c := t[d][l]
			if l == legOther && c.packets == 0 {
				continue
			}
			out = append(out, TrafficCount{Direction: dirNames[d], Leg: legNames[l], Packets: c.packets, Bytes: c.bytes})
		}
	}
	return out
}
