package capture

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
)

// filterSnaplen is what an accepting filter returns: far more than any frame,
// so the ring slot size is the only limit and truncation stays visible.
const filterSnaplen = 0x40000

// Offsets into an Ethernet + IPv4 frame (no VLAN tag: the kernel strips it
// before packet taps see the frame).
const (
	offEtherType = 12
	offIPv4      = 14
	offIPFlags   = offIPv4 + 6
	offIPProto   = offIPv4 + 9
	offIPSrc     = offIPv4 + 12
	offIPDst     = offIPv4 + 16
	etherTypeIP  = 0x0800
	protoTCP     = 6
	ipFragOffset = 0x1fff
	packetHost   = 0 // PACKET_HOST, linux/if_packet.h: the frame is addressed to this host
)

// ClientFilter accepts IPv4 TCP frames with dst in vips and dst port in ports
// (the handled client traffic). Non-first fragments are rejected.
func ClientFilter(vips [][4]byte, ports []uint16) ([]bpf.RawInstruction, error) {
	if len(vips) == 0 || len(ports) == 0 {
		return nil, fmt.Errorf("capture: client filter: need at least one VIP and one port")
	}
	var a asm
	a.ipv4TCP()
	a.load(offIPDst, 4)
	a.oneOf(addrs(vips), "port", "reject")
	a.label("port")
	a.emit(bpf.LoadMemShift{Off: offIPv4})
	a.emit(bpf.LoadIndirect{Off: offIPv4 + 2, Size: 2}) // TCP dst port
	a.oneOf(port32(ports), "accept", "reject")
	return a.finish()
}

// ServerFilter accepts IPv4 TCP frames with src in servers, src port in
// ports, and dst NOT equal to any of exclude (the gateway's own addresses, so
// its own probes to the servers are not captured).
func ServerFilter(servers [][4]byte, ports []uint16, exclude [][4]byte) ([]bpf.RawInstruction, error) {
	if len(servers) == 0 || len(ports) == 0 {
		return nil, fmt.Errorf("capture: server filter: need at least one server and one port")
	}
	var a asm
	a.ipv4TCP()
	a.load(offIPSrc, 4)
	a.oneOf(addrs(servers), "dst", "reject")
	a.label("dst")
	if len(exclude) > 0 {
		a.load(offIPDst, 4)
		a.oneOf(addrs(exclude), "reject", "port")
		a.label("port")
	}
	a.emit(bpf.LoadMemShift{Off: offIPv4})
	a.emit(bpf.LoadIndirect{Off: offIPv4, Size: 2}) // TCP src port
	a.oneOf(port32(ports), "accept", "reject")
	return a.finish()
}

func addrs(in [][4]byte) []uint32 {
	out := make([]uint32, len(in))
	for i, a := range in {
		out[i] = binary.BigEndian.Uint32(a[:])
	}
	return out
}

func port32(in []uint16) []uint32 {
	out := make([]uint32, len(in))
	for i, p := range in {
		out[i] = uint32(p)
	}
	return out
}

// asm is a tiny assembler with labels. Conditional jumps only ever skip one
// instruction; long jumps are unconditional (32-bit offsets), so programs of
// any set size stay within the 8-bit conditional jump range.
type asm struct {
	ins    []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at    int
	label string
}

func (a *asm) emit(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) load(off uint32, size int) { a.emit(bpf.LoadAbsolute{Off: off, Size: size}) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

func (a *asm) jump(label string) {
	a.fixups = append(a.fixups, fixup{at: len(a.ins), label: label})
	a.emit(bpf.Jump{})
}

// jumpIf goes to label when A <cond> val, else falls through.
func (a *asm) jumpIf(cond bpf.JumpTest, val uint32, label string) {
	a.emit(bpf.JumpIf{Cond: cond, Val: val, SkipFalse: 1})
	a.jump(label)
}

// oneOf goes to yes when A equals one of vals, else to no.
func (a *asm) oneOf(vals []uint32, yes, no string) {
	seen := map[uint32]bool{}
	for _, v := range vals {
		if seen[v] {
			continue
		}
		seen[v] = true
		a.jumpIf(bpf.JumpEqual, v, yes)
	}
	a.jump(no)
}

// ipv4TCP rejects anything but IPv4 TCP first fragments addressed to this
// host, untagged.
func (a *asm) ipv4TCP() {
	// A frame for another host's MAC reaches the ring when the interface is
	// promiscuous (tcpdump, a bridge port): the gateway is not its next hop.
	a.emit(bpf.LoadExtension{Num: bpf.ExtType})
	a.jumpIf(bpf.JumpNotEqual, packetHost, "reject")
	// The kernel strips a VLAN tag before the taps see the frame: a tagged
	// one belongs to that VLAN's interface, and a reply from this one would
	// leave untagged.
	a.emit(bpf.LoadExtension{Num: bpf.ExtVLANTagPresent})
	a.jumpIf(bpf.JumpNotEqual, 0, "reject")
	a.load(offEtherType, 2)
	a.jumpIf(bpf.JumpNotEqual, etherTypeIP, "reject")
	a.load(offIPProto, 1)
	a.jumpIf(bpf.JumpNotEqual, protoTCP, "reject")
	a.load(offIPFlags, 2)
	a.jumpIf(bpf.JumpBitsSet, ipFragOffset, "reject")
}

func (a *asm) finish() ([]bpf.RawInstruction, error) {
	a.label("accept")
	a.emit(bpf.RetConstant{Val: filterSnaplen})
	a.label("reject")
	a.emit(bpf.RetConstant{Val: 0})
	for _, f := range a.fixups {
		to, ok := a.labels[f.label]
		if !ok {
			return nil, fmt.Errorf("capture: filter: undefined label %q", f.label)
		}
		a.ins[f.at] = bpf.Jump{Skip: uint32(to - f.at - 1)}
	}
	if len(a.ins) > 4096 { // BPF_MAXINSNS
		return nil, fmt.Errorf("capture: filter: %d instructions, more than the kernel's 4096", len(a.ins))
	}
	raw, err := bpf.Assemble(a.ins)
	if err != nil {
		return nil, fmt.Errorf("capture: assemble filter: %w", err)
	}
	return raw, nil
}
