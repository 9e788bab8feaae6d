// Package capture owns the gateway's contact with the host: AF_PACKET receive
// rings with in-kernel BPF filters, raw transmit, the kernel-bypass nftables
// table, offload checks, and next-hop MAC resolution through netlink.
//
// A Ring is a TPACKET_V2 memory-mapped receive ring on one interface. Its
// socket taps frames with ETH_P_ALL, which runs before the netdev ingress hook,
// so the gateway sees the frames that its Bypass tables then drop in the host
// kernel. The filter is attached before the socket is bound, outgoing frames
// are ignored, and frames larger than a ring slot are reported truncated
// (Frame.WireLen > len(Frame.Data)) so the caller can count and drop them.
//
// A Sender writes whole Ethernet frames on one interface with write(2); a
// Batch queues frames for one sendmmsg(2).
//
// ClientFilter and ServerFilter build classic BPF programs for the handled
// traffic; InstallBypass installs the nftables tables that drop the same
// traffic in the host kernel and count what it would otherwise forward.
//
// DisableOffloads turns off GRO/LRO/TSO/GSO and checksum offloads so that no
// super-frames or partial checksums reach or leave the gateway.
//
// Neighbors keeps a zero-allocation next-hop MAC cache fed by netlink route and
// neighbour tables and neighbour events, triggering kernel ARP on a miss.
//
// Everything but the filters is Linux-only; on other systems the constructors
// return ErrUnsupported.
package capture
