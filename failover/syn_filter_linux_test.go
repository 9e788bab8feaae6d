package failover

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// The raw socket's filter lets through only the server's segments from its
// service port to the prober's port, whatever the IP header's length.
func TestSYNAnswerFilter(t *testing.T) {
	server := netip.MustParseAddrPort("10.77.2.10:80")
	const port = 40000
	vm, err := bpf.NewVM(synAnswerProgram(server, port))
	if err != nil {
		t.Fatal(err)
	}
	segment := func(src string, sport, dport uint16, ihl int) []byte {
		b := make([]byte, ihl*4+20)
		b[0] = 0x40 | byte(ihl)
		b[9] = 6
		a := netip.MustParseAddr(src).As4()
		copy(b[12:16], a[:])
		binary.BigEndian.PutUint16(b[ihl*4:], sport)
		binary.BigEndian.PutUint16(b[ihl*4+2:], dport)
		return b
	}
	cases := []struct {
		name   string
		packet []byte
		accept bool
	}{
		{"the server's answer", segment("10.77.2.10", 80, port, 5), true},
		{"the server's answer, IP options", segment("10.77.2.10", 80, port, 7), true},
		{"another host", segment("10.77.2.11", 80, port, 5), false},
		{"another service port", segment("10.77.2.10", 443, port, 5), false},
		{"to another port of ours", segment("10.77.2.10", 80, port+1, 5), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := vm.Run(tc.packet)
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tc.accept {
				t.Fatalf("kept %d bytes, want accepted %v", n, tc.accept)
			}
		})
	}
}
