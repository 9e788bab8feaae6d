package datapath

import (
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"understudy/capture"
)

// TestStatusDuringClose: a status request or a metrics scrape may come
// while the gateway shuts down; Close waits for it, and a status asked for
// after Close says the rings are gone instead of reading closed sockets.
// Under -race it also catches the two touching a ring at once.
func TestStatusDuringClose(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: opens capture rings on a veth in a network namespace of its own")
	}
	g := drainGateway(t)
	done := make(chan error)
	go func() {
		// A thread of its own in a new namespace, never unlocked: it
		// ends with the goroutine, and the namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sdc0"}, PeerName: "sdc1"}); err != nil {
			done <- err
			return
		}
		for range 2 {
			r, err := capture.OpenRing("sdc0", nil, capture.RingConfig{FrameCount: 16})
			if err != nil {
				done <- err
				return
			}
			g.rings = append(g.rings, r)
		}
		var err error
		if g.clientTx, err = capture.OpenSender("sdc0"); err != nil {
			done <- err
			return
		}
		g.serverTx, err = capture.OpenSender("sdc0")
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 200 {
			g.Status()
		}
	}()
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if s := g.Status(); !strings.Contains(s.KernelBypass.Error, "closed") {
		t.Fatalf("status after Close: kernel bypass %+v, want it to say the gateway is closed", s.KernelBypass)
	}
}
