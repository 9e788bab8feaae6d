package testbed

import (
	"fmt"
	"os"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ReadPcapFile decodes a capture file, such as the gateway's --pcap.
func ReadPcapFile(path string) (Packets, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ps, err := readPcap(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ps, nil
}

// Direction keeps the packets of a Linux cooked capture (the gateway's
// --pcap) with the given packet type: LinuxSLLPacketTypeHost for what the
// gateway received, LinuxSLLPacketTypeOutgoing for what it sent.
func (ps Packets) Direction(typ layers.LinuxSLLPacketType) Packets {
	return ps.Filter(func(p gopacket.Packet) bool {
		sll, ok := p.Layer(layers.LayerTypeLinuxSLL).(*layers.LinuxSLL)
		return ok && sll.PacketType == typ
	})
}
