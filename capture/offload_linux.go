package capture

import (
	"fmt"
	"sort"
	"strings"

	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
)

// offloadFeatures are the kernel feature names (ETH_SS_FEATURES strings) that
// make frames seen by packet sockets differ from frames on the wire: receive
// coalescing hands up super-frames, segmentation offloads expect them on send,
// and checksum offloads leave partial checksums.
var offloadFeatures = []string{
	"rx-gro", "rx-lro", "rx-gro-hw", "rx-gro-list",
	"tx-generic-segmentation",
	"tx-tcp-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation",
	"tx-tcp6-segmentation", "tx-tcp-accecn-segmentation",
	"rx-checksum", "tx-checksum-ipv4", "tx-checksum-ipv6", "tx-checksum-ip-generic",
}

// ethtoolAlias gives the `ethtool -K` name an operator would type.
var ethtoolAlias = map[string]string{
	"rx-gro": "gro", "rx-lro": "lro", "rx-gro-hw": "rx-gro-hw", "tx-generic-segmentation": "gso",
	"tx-tcp-segmentation": "tso", "rx-checksum": "rx", "tx-checksum-ipv4": "tx",
	"tx-checksum-ipv6": "tx", "tx-checksum-ip-generic": "tx",
}

// DisableOffloads checks and disables GRO, LRO, TSO, GSO and tx/rx checksum
// offload (ethtool ioctl) on an interface; it returns the names of the
// features it turned off, and an error if a feature is on and cannot be
// turned off. Features the device does not have are ignored.
func DisableOffloads(ifname string) (changed []string, err error) {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return nil, fmt.Errorf("capture: disable offloads on %s: %w", ifname, err)
	}
	defer e.Close()
	before, err := e.FeaturesWithState(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture: disable offloads on %s: read features: %w", ifname, err)
	}
	want := map[string]bool{}
	var fixed []string
	for _, name := range offloadFeatures {
		st, ok := before[name]
		if !ok || !st.Active {
			continue
		}
		if !st.Available || st.NeverChanged {
			fixed = append(fixed, name)
			continue
		}
		want[name] = false
	}
	if len(fixed) > 0 {
		return nil, fmt.Errorf("capture: disable offloads on %s: %s on and fixed by the driver; "+
			"the gateway needs wire-sized frames with full checksums: use another interface or driver, "+
			"or handle the offload (PACKET_VNET_HDR)", ifname, describe(fixed))
	}
	if len(want) == 0 {
		return nil, nil
	}
	if err := e.Change(ifname, want); err != nil {
		return nil, fmt.Errorf("capture: disable offloads on %s: set %s off: %w", ifname, describe(keys(want)), err)
	}
	after, err := e.FeaturesWithState(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture: disable offloads on %s: re-read features: %w", ifname, err)
	}
	var still []string
	for _, name := range offloadFeatures {
		if after[name].Active {
			still = append(still, name)
		} else if before[name].Active {
			changed = append(changed, name)
		}
	}
	if len(still) > 0 {
		return changed, fmt.Errorf("capture: disable offloads on %s: %s still on after turning off", ifname, describe(still))
	}
	return changed, nil
}

func describe(names []string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		if a, ok := ethtoolAlias[n]; ok && a != n {
			parts[i] = fmt.Sprintf("%s (ethtool -K %s)", n, a)
		} else {
			parts[i] = n
		}
	}
	return strings.Join(parts, ", ")
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CheckSuperFrameSize returns an error if ifname may hand up or take
// super-frames larger than 64 KiB (BIG TCP: gro_ipv4_max_size or
// gso_ipv4_max_size above 65536). Such an IPv4 packet has no length in its
// header, and would not fit a ring slot; with offloads kept they must stay
// at their default.
func CheckSuperFrameSize(ifname string) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("capture: %s: %w", ifname, err)
	}
	a := link.Attrs()
	for _, lim := range []struct {
		name string
		v    uint32
	}{{"gro_ipv4_max_size", a.GROIPv4MaxSize}, {"gso_ipv4_max_size", a.GSOIPv4MaxSize}} {
		if lim.v > MaxSuperFrame+1 {
			return fmt.Errorf("capture: %s has %s %d (BIG TCP): with offloads kept, super-frames must fit 64 KiB; "+
				"run `ip link set dev %s %s 65536`, or run without --keep-offloads", ifname, lim.name, lim.v, ifname, lim.name)
		}
	}
	return nil
}
