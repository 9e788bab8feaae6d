package failover_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"understudy/failover"
)

// The datapath's side: read transitions, let the arbiter decide, carry
// out the action, fence after a manual failover.
func Example() {
	m, err := failover.NewMonitor(failover.MonitorConfig{
		Servers: [2]netip.AddrPort{
			netip.MustParseAddrPort("10.77.2.10:80"),
			netip.MustParseAddrPort("10.77.2.11:80"),
		},
		HTTPPath: "/index.html",
		Iface:    "srv0",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go m.Run(ctx)

	arb := failover.NewArbiter([2]string{})
	carryOut := func(act failover.Action) {
		switch act.Kind {
		case failover.Takeover:
			// switch every flow of act.From to act.To, fence act.From
			if act.Manual {
				m.Fence(act.From, act.Cause)
			}
		case failover.StandbyLost:
			// stop gating on act.Server
		case failover.Reintegrate:
			// replicate new flows to act.Server
		}
	}
	for {
		select {
		case tr := <-m.Events():
			carryOut(arb.Apply(tr))
		case <-ctx.Done():
			fmt.Println(arb.Roles())
			return
		}
	}
}
