package capture

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the nftables objects the gateway owns, beside its tables'
// (BypassTable, WatchTable).
const (
	clientChainName  = "client_ingress"
	serverChainName  = "server_ingress"
	watchChainName   = "forward"
	bypassPriority   = -500 // before anything else at the hook
	maxBypassRuleSet = 4096 // rules per chain; one per (address, port) pair
)

// Bypass is the nftables state the gateway owns: table "understudy" family
// netdev with one ingress chain per interface dropping exactly what
// ClientFilter/ServerFilter match (with counters), and a table
// "understudy_watch" family inet with a forward chain counting (never
// dropping) any handled packet the kernel tries to forward — must stay zero.
//
// Packet sockets tap frames (ETH_P_ALL, ptype_all) before the netdev ingress
// hook, so the gateway still captures what these chains drop. Non-first IPv4
// fragments match neither the filters nor these rules.
type Bypass struct {
	cfg                 BypassConfig
	table, watch        *nftables.Table
	client, server, fwd *nftables.Chain
}

// InstallBypass deletes stale tables of the same names first (a previous run
// that crashed), then creates them, all in one netlink transaction.
func InstallBypass(cfg BypassConfig) (*Bypass, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("capture: install bypass: no ports")
	}
	if cfg.ClientIface != "" && len(cfg.VIPs) == 0 {
		return nil, errors.New("capture: install bypass: client interface without VIPs")
	}
	if cfg.ServerIface != "" && len(cfg.Servers) == 0 {
		return nil, errors.New("capture: install bypass: server interface without servers")
	}
	if n := max(len(cfg.VIPs), len(cfg.Servers)) * len(cfg.Ports); n > maxBypassRuleSet {
		return nil, fmt.Errorf("capture: install bypass: %d address/port pairs, at most %d", n, maxBypassRuleSet)
	}
	b := &Bypass{
		cfg:   cfg,
		table: &nftables.Table{Name: BypassTable, Family: nftables.TableFamilyNetdev},
		watch: &nftables.Table{Name: WatchTable, Family: nftables.TableFamilyINet},
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("capture: install bypass: %w", err)
	}
	b.deleteTables(c)
	c.AddTable(b.table)
	c.AddTable(b.watch)

	prio := nftables.ChainPriorityRef(bypassPriority)
	accept := nftables.ChainPolicyAccept
	if cfg.ClientIface != "" {
		b.client = c.AddChain(&nftables.Chain{Name: clientChainName, Table: b.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookIngress, Priority: prio, Device: cfg.ClientIface, Policy: &accept})
		for _, e := range clientMatches(cfg) {
			c.AddRule(&nftables.Rule{Table: b.table, Chain: b.client, Exprs: dropRule(etherIPv4(), e)})
		}
	}
	if cfg.ServerIface != "" {
		b.server = c.AddChain(&nftables.Chain{Name: serverChainName, Table: b.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookIngress, Priority: prio, Device: cfg.ServerIface, Policy: &accept})
		for _, e := range serverMatches(cfg) {
			c.AddRule(&nftables.Rule{Table: b.table, Chain: b.server, Exprs: dropRule(etherIPv4(), e)})
		}
		// The VIPs live on no interface: a frame from the servers' LAN
		// with a VIP for source is someone posing as the gateway's service,
		// which the host would otherwise route to the clients.
		for _, vip := range uniqAddrs(cfg.VIPs) {
			c.AddRule(&nftables.Rule{Table: b.table, Chain: b.server, UserData: []byte(spoofedVIPTag),
				Exprs: dropRule(etherIPv4(), ipAddr(12, expr.CmpOpEq, vip))})
		}
	}
	b.fwd = c.AddChain(&nftables.Chain{Name: watchChainName, Table: b.watch, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: prio, Policy: &accept})
	for _, e := range append(clientMatches(cfg), serverMatches(cfg)...) {
		exprs := append(nfprotoIPv4(), e...)
		exprs = append(exprs, &expr.Counter{})
		c.AddRule(&nftables.Rule{Table: b.watch, Chain: b.fwd, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("capture: install bypass (client %q, server %q): %w", cfg.ClientIface, cfg.ServerIface, err)
	}
	return b, nil
}

// deleteTables queues deletion of both tables whether or not they exist: an
// add of an existing table is a no-op, so add+delete never fails.
func (b *Bypass) deleteTables(c *nftables.Conn) {
	for _, t := range []*nftables.Table{b.table, b.watch} {
		c.AddTable(t)
		c.DelTable(t)
	}
}

// Remove deletes both tables. Removing twice is not an error.
func (b *Bypass) Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("capture: remove bypass: %w", err)
	}
	b.deleteTables(c)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("capture: remove bypass: %w", err)
	}
	return nil
}

// Counters reads the packet counters of the bypass rules.
func (b *Bypass) Counters() (BypassCounters, error) {
	c, err := nftables.New()
	if err != nil {
		return BypassCounters{}, fmt.Errorf("capture: bypass counters: %w", err)
	}
	var out BypassCounters
	for _, x := range []struct {
		t   *nftables.Table
		ch  *nftables.Chain
		sum *uint64
	}{{b.table, b.client, &out.ClientDropped}, {b.table, b.server, &out.ServerDropped}, {b.watch, b.fwd, &out.KernelForwarded}} {
		if x.ch == nil {
			continue
		}
		rules, err := c.GetRules(x.t, x.ch)
		if err != nil {
			return out, fmt.Errorf("capture: bypass counters: %s %s: %w", x.t.Name, x.ch.Name, err)
		}
		for _, r := range rules {
			sum := x.sum
			if string(r.UserData) == spoofedVIPTag {
				sum = &out.SpoofedVIP
			}
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					*sum += ctr.Packets
				}
			}
		}
	}
	return out, nil
}

// spoofedVIPTag marks the server-side rules that drop frames from a VIP.
const spoofedVIPTag = "spoofed_vip"

// clientMatches returns, per (VIP, port), the match expressions for
// "ip daddr VIP tcp dport port".
func clientMatches(cfg BypassConfig) [][]expr.Any {
	var out [][]expr.Any
	for _, vip := range uniqAddrs(cfg.VIPs) {
		for _, port := range uniqPorts(cfg.Ports) {
			e := ipAddr(16, expr.CmpOpEq, vip)
			e = append(e, tcpPort(2, port)...)
			out = append(out, e)
		}
	}
	return out
}

// serverMatches returns, per (server, port), the match expressions for
// "ip saddr server ip daddr != exclude... tcp sport port".
func serverMatches(cfg BypassConfig) [][]expr.Any {
	var out [][]expr.Any
	for _, srv := range uniqAddrs(cfg.Servers) {
		for _, port := range uniqPorts(cfg.Ports) {
			e := ipAddr(12, expr.CmpOpEq, srv)
			for _, ex := range uniqAddrs(cfg.Exclude) {
				e = append(e, ipAddr(16, expr.CmpOpNeq, ex)...)
			}
			e = append(e, tcpPort(0, port)...)
			out = append(out, e)
		}
	}
	return out
}

// etherIPv4 matches untagged IPv4 frames; in the netdev family this must
// come before any network header load. The Ethernet type is read from the
// frame as well: the kernel strips a VLAN tag before ingress and leaves the
// inner protocol in skb->protocol, but nft's link-layer payload puts the
// tag back, so a frame of a VLAN interface on top of this one is left to
// that interface (the capture filters take untagged frames only).
func etherIPv4() []expr.Any {
	ipv4 := binary.BigEndian.AppendUint16(nil, unix.ETH_P_IP)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ipv4},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ipv4},
	}
}

// nfprotoIPv4 matches IPv4 packets in the inet family.
func nfprotoIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func ipAddr(off uint32, op expr.CmpOp, a [4]byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Cmp{Op: op, Register: 1, Data: append([]byte(nil), a[:]...)},
	}
}

// tcpPort matches "meta l4proto tcp" then the port at off in the TCP header.
// The transport header load fails (no match) for non-first fragments.
func tcpPort(off uint32, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

func dropRule(prefix, match []expr.Any) []expr.Any {
	out := append(append([]expr.Any{}, prefix...), match...)
	return append(out, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

func uniqAddrs(in [][4]byte) [][4]byte {
	seen := map[[4]byte]bool{}
	var out [][4]byte
	for _, a := range in {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func uniqPorts(in []uint16) []uint16 {
	seen := map[uint16]bool{}
	var out []uint16
	for _, p := range in {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// BypassPresent reports whether either of the gateway's tables exists.
// Checked before InstallBypass, it tells that a run ended without removing
// them (a crash, kill -9): InstallBypass replaces them.
func BypassPresent() (bool, error) {
	bypass, watch, err := bypassTables()
	return bypass || watch, err
}

// Installed reports whether both tables are in place: someone may have
// deleted them under the running gateway (nft flush ruleset).
func (b *Bypass) Installed() (bool, error) {
	bypass, watch, err := bypassTables()
	return bypass && watch, err
}

func bypassTables() (bypass, watch bool, err error) {
	c, err := nftables.New()
	if err != nil {
		return false, false, fmt.Errorf("capture: list nftables tables: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return false, false, fmt.Errorf("capture: list nftables tables: %w", err)
	}
	for _, t := range tables {
		switch {
		case t.Name == BypassTable && t.Family == nftables.TableFamilyNetdev:
			bypass = true
		case t.Name == WatchTable && t.Family == nftables.TableFamilyINet:
			watch = true
		}
	}
	return bypass, watch, nil
}
