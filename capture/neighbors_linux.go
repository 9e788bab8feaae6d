package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// neighRetry is the least time between two resolution attempts for one
	// destination or next hop: misses never turn into an ARP flood, and
	// the kernel paces its own probes on top.
	neighRetry = time.Second
	// neighTick paces refreshes, route re-resolution and resubscription.
	neighTick = time.Second
	// neighSweep drops destinations not looked up for this long.
	neighSweep = 30 * time.Second
	// neighUsable are the kernel neighbour states with a MAC worth sending to.
	neighUsable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
		netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP
)

// Neighbors resolves the next-hop MAC for an IPv4 destination leaving ifname:
// route lookup (netlink RouteGet) then neighbour table, kept in a cache that
// netlink neighbour and route subscriptions keep fresh. Lookup is the hot
// path: zero allocations, no syscalls. On a miss it asks a background
// goroutine to resolve and returns false.
//
// Entries the gateway keeps using are kept reachable: when the kernel marks
// one stale (it sees none of the gateway's traffic), the worker asks the
// kernel to re-confirm it (NTF_USE, a unicast probe) before it can be
// garbage-collected.
type Neighbors struct {
	ifname  string
	ifindex int
	h       *netlink.Handle
	ns      netns.NsHandle // the caller's namespace: resubscriptions and the UDP fallback use it

	snap   atomic.Pointer[neighSnap] // replaced whole by the worker, read by Lookup
	missCh chan [4]byte

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	changed chan struct{}     // closed and replaced on every snapshot change
	errs    map[[4]byte]error // last resolution error per destination, for Resolve
	useErr  error             // last NTF_USE failure (then the UDP fallback is used)
	stats   neighStats
}

type neighStats struct {
	Triggers, Fallbacks, Refreshes uint64
}

// neighSnap is immutable once published; only the used flags change.
type neighSnap struct {
	routes *cowMap[routeEntry] // destination → next hop
	hops   *cowMap[hopEntry]   // next hop → MAC, usable entries only
}

type routeEntry struct {
	hop  [4]byte
	used atomic.Bool
}

type hopEntry struct {
	mac  [6]byte
	used atomic.Bool
}

// NewNeighbors starts the cache for ifname in the caller's network namespace.
// Its goroutines stop when ctx is done or Close is called.
func NewNeighbors(ctx context.Context, ifname string) (*Neighbors, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture: neighbours on %s: %w", ifname, err)
	}
	// A handle pins its sockets to the namespace current now, whichever
	// thread the worker later runs on.
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("capture: neighbours on %s: current namespace: %w", ifname, err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("capture: neighbours on %s: netlink handle: %w", ifname, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &Neighbors{
		ifname: ifname, ifindex: ifi.Index, h: h, ns: ns,
		missCh: make(chan [4]byte, 256),
		cancel: cancel, closed: make(chan struct{}),
		changed: make(chan struct{}),
		errs:    map[[4]byte]error{},
	}
	n.snap.Store(&neighSnap{routes: newCowMap[routeEntry](nil), hops: newCowMap[hopEntry](nil)})
	w := &neighWorker{n: n, kern: map[[4]byte]kernNeigh{}, lastTry: map[[4]byte]time.Time{}, lastTrigger: map[[4]byte]time.Time{}}
	if err := w.subscribe(); err != nil {
		cancel()
		h.Close()
		ns.Close()
		return nil, fmt.Errorf("capture: neighbours on %s: %w", ifname, err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		w.run(ctx)
	}()
	return n, nil
}

// Lookup returns the MAC of the next hop towards ip. On a miss it queues a
// background resolution and returns false. Zero allocations, no syscalls.
func (n *Neighbors) Lookup(ip [4]byte) ([6]byte, bool) {
	s := n.snap.Load()
	if r := s.routes.get(ip); r != nil {
		if !r.used.Load() {
			r.used.Store(true)
		}
		if e := s.hops.get(r.hop); e != nil {
			if !e.used.Load() {
				e.used.Store(true)
			}
			return e.mac, true
		}
	} else if e := s.hops.get(ip); e != nil {
		// Not routed yet, but the kernel already knows ip as a neighbour on
		// this link (a client that just ARPed for us): it is its own next
		// hop. The worker still learns the route for the next lookups.
		select {
		case n.missCh <- ip:
		default:
		}
		return e.mac, true
	}
	select {
	case n.missCh <- ip:
	default: // the worker is busy; a later miss asks again
	}
	return [6]byte{}, false
}

// Resolve blocks until the next-hop MAC for ip is known, ctx is done or
// timeout passes (for start-up, e.g. the servers' MACs).
func (n *Neighbors) Resolve(ctx context.Context, ip [4]byte, timeout time.Duration) ([6]byte, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	fail := func(why error) ([6]byte, error) {
		n.mu.Lock()
		last := n.errs[ip]
		n.mu.Unlock()
		if last != nil {
			why = fmt.Errorf("%w (last error: %w)", why, last)
		}
		return [6]byte{}, fmt.Errorf("capture: resolve %s on %s: %w", net.IP(ip[:]), n.ifname, why)
	}
	for {
		n.mu.Lock()
		changed := n.changed
		n.mu.Unlock()
		if mac, ok := n.Lookup(ip); ok {
			return mac, nil
		}
		// Lookup's request may have been dropped on a full queue: ask
		// again, blocking.
		select {
		case n.missCh <- ip:
		case <-n.closed:
			return fail(errors.New("closed"))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-timer.C:
			return fail(errors.New("timed out"))
		}
		select {
		case <-changed:
		case <-time.After(neighRetry / 4):
		case <-n.closed:
			return fail(errors.New("closed"))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-timer.C:
			return fail(errors.New("timed out"))
		}
	}
}

// Close stops the goroutines and subscriptions.
func (n *Neighbors) Close() {
	n.once.Do(func() {
		close(n.closed)
		n.cancel()
		n.wg.Wait()
		n.h.Close()
		n.ns.Close()
	})
}

func (n *Neighbors) setErr(ip [4]byte, err error) {
	n.mu.Lock()
	if err == nil {
		delete(n.errs, ip)
	} else if len(n.errs) < 4096 {
		n.errs[ip] = err
	}
	n.mu.Unlock()
}

// publish installs a new snapshot and wakes Resolve callers.
func (n *Neighbors) publish(s *neighSnap) {
	n.snap.Store(s)
	n.mu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
}

// kernNeigh is the worker's copy of a kernel neighbour entry on the link.
type kernNeigh struct {
	state int
	mac   [6]byte
}

func (k kernNeigh) usable() bool { return k.state&neighUsable != 0 && k.mac != [6]byte{} }

// neighWorker owns all writes to the cache.
type neighWorker struct {
	n           *Neighbors
	kern        map[[4]byte]kernNeigh // neighbour entries on the link, from dump and events
	lastTry     map[[4]byte]time.Time // per destination
	lastTrigger map[[4]byte]time.Time // per next hop
	routesDirty bool
	lastSweep   time.Time

	subDone chan struct{}
	neighCh chan netlink.NeighUpdate
	routeCh chan netlink.RouteUpdate
}

// subscribe opens the neighbour and route subscriptions, then reloads the
// link's neighbour table (after subscribing, so no change falls in between).
func (w *neighWorker) subscribe() error {
	n := w.n
	w.subDone = make(chan struct{})
	w.neighCh = make(chan netlink.NeighUpdate, 1024)
	w.routeCh = make(chan netlink.RouteUpdate, 256)
	if err := netlink.NeighSubscribeWithOptions(w.neighCh, w.subDone, netlink.NeighSubscribeOptions{
		Namespace: &n.ns, ErrorCallback: func(error) {}, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		w.unsubscribe()
		return fmt.Errorf("neighbour subscription: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(w.routeCh, w.subDone, netlink.RouteSubscribeOptions{
		Namespace: &n.ns, ErrorCallback: func(error) {}, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		w.unsubscribe()
		return fmt.Errorf("route subscription: %w", err)
	}
	list, err := n.h.NeighList(n.ifindex, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		w.unsubscribe()
		return fmt.Errorf("neighbour list: %w", err)
	}
	w.kern = map[[4]byte]kernNeigh{}
	for _, e := range list {
		if ip4 := e.IP.To4(); ip4 != nil {
			w.kern[[4]byte(ip4)] = kernFrom(e)
		}
	}
	w.rebuildHops()
	w.routesDirty = true // routes may have changed while unsubscribed
	return nil
}

// unsubscribe closes the subscriptions and drains their channels so the
// library's receive goroutines can exit.
func (w *neighWorker) unsubscribe() {
	if w.subDone == nil {
		return
	}
	close(w.subDone)
	nch, rch := w.neighCh, w.routeCh
	go func() {
		for range nch {
		}
	}()
	go func() {
		for range rch {
		}
	}()
	w.subDone, w.neighCh, w.routeCh = nil, nil, nil
}

func kernFrom(e netlink.Neigh) kernNeigh {
	k := kernNeigh{state: e.State}
	if len(e.HardwareAddr) == 6 {
		k.mac = [6]byte(e.HardwareAddr)
	}
	return k
}

func (w *neighWorker) run(ctx context.Context) {
	defer w.unsubscribe()
	tick := time.NewTicker(neighTick)
	defer tick.Stop()
	w.lastSweep = time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case ip := <-w.n.missCh:
			w.resolve(ip)
		case u, ok := <-w.neighCh:
			if !ok {
				w.unsubscribe() // lost events (ENOBUFS): resubscribe on the next tick
				continue
			}
			w.neighEvent(u)
		case _, ok := <-w.routeCh:
			if !ok {
				w.unsubscribe()
				continue
			}
			w.routesDirty = true
		case now := <-tick.C:
			w.periodic(now)
		}
	}
}

func (w *neighWorker) neighEvent(u netlink.NeighUpdate) {
	ip4 := u.IP.To4()
	if u.LinkIndex != w.n.ifindex || ip4 == nil || (u.Family != 0 && u.Family != unix.AF_INET) {
		return
	}
	hop := [4]byte(ip4)
	if u.Type == unix.RTM_DELNEIGH {
		delete(w.kern, hop)
	} else {
		w.kern[hop] = kernFrom(u.Neigh)
	}
	w.updateHop(hop)
}

// updateHop brings the snapshot's entry for hop in line with the kernel's.
func (w *neighWorker) updateHop(hop [4]byte) {
	s := w.n.snap.Load()
	k, ok := w.kern[hop]
	cur := s.hops.get(hop)
	switch {
	case ok && k.usable() && cur != nil && cur.mac == k.mac:
		return
	case ok && k.usable():
		e := &hopEntry{mac: k.mac}
		if cur != nil {
			e.used.Store(cur.used.Load())
		}
		w.n.publish(&neighSnap{routes: s.routes, hops: s.hops.with(hop, e)})
	case cur != nil:
		w.n.publish(&neighSnap{routes: s.routes, hops: s.hops.with(hop, nil)})
	}
}

func (w *neighWorker) rebuildHops() {
	s := w.n.snap.Load()
	hops := make(map[[4]byte]*hopEntry, len(w.kern))
	for hop, k := range w.kern {
		if !k.usable() {
			continue
		}
		e := &hopEntry{mac: k.mac}
		if cur := s.hops.get(hop); cur != nil {
			if cur.mac == k.mac {
				e = cur
			} else {
				e.used.Store(cur.used.Load())
			}
		}
		hops[hop] = e
	}
	w.n.publish(&neighSnap{routes: s.routes, hops: newCowMap(hops)})
}

// resolve handles a miss for dst: route, then neighbour, then a kernel
// resolution trigger, each at most once per neighRetry.
func (w *neighWorker) resolve(dst [4]byte) {
	now := time.Now()
	if t, ok := w.lastTry[dst]; ok && now.Sub(t) < neighRetry {
		return
	}
	w.lastTry[dst] = now
	hop, err := w.routeHop(dst)
	w.n.setErr(dst, err)
	if err != nil {
		return
	}
	s := w.n.snap.Load()
	if r := s.routes.get(dst); r == nil || r.hop != hop {
		s = &neighSnap{routes: s.routes.with(dst, &routeEntry{hop: hop}), hops: s.hops}
		w.n.publish(s)
	}
	if s.hops.get(hop) != nil {
		return
	}
	if k, ok := w.kern[hop]; ok && k.usable() {
		w.updateHop(hop)
		return
	}
	if t, ok := w.lastTrigger[hop]; ok && now.Sub(t) < neighRetry {
		return
	}
	w.lastTrigger[hop] = now
	if err := w.trigger(hop); err != nil {
		w.n.setErr(dst, err)
	}
}

func (w *neighWorker) routeHop(dst [4]byte) ([4]byte, error) {
	routes, err := w.n.h.RouteGet(net.IP(dst[:]))
	if err != nil {
		return [4]byte{}, fmt.Errorf("route lookup: %w", err)
	}
	if len(routes) == 0 {
		return [4]byte{}, errors.New("no route")
	}
	r := routes[0]
	if r.LinkIndex != w.n.ifindex {
		name := fmt.Sprint(r.LinkIndex)
		if ifi, err := net.InterfaceByIndex(r.LinkIndex); err == nil {
			name = ifi.Name
		}
		return [4]byte{}, fmt.Errorf("route leaves via %s, not %s", name, w.n.ifname)
	}
	if gw := r.Gw.To4(); gw != nil {
		return [4]byte(gw), nil
	}
	return dst, nil
}

// trigger makes the kernel resolve hop: a neighbour request with NTF_USE
// (`ip neigh replace IP dev X use`), which creates the entry if needed and
// runs the kernel's own paced ARP state machine. If the kernel refuses it,
// an empty UDP datagram to the discard port does the same through the
// output path.
func (w *neighWorker) trigger(hop [4]byte) error {
	n := w.n
	err := n.h.NeighSet(&netlink.Neigh{
		LinkIndex: n.ifindex, Family: unix.AF_INET, IP: net.IP(hop[:]),
		State: netlink.NUD_NONE, Flags: netlink.NTF_USE,
	})
	n.mu.Lock()
	n.stats.Triggers++
	n.useErr = err
	n.mu.Unlock()
	if err == nil {
		return nil
	}
	n.mu.Lock()
	n.stats.Fallbacks++
	n.mu.Unlock()
	if ferr := inNamespace(n.ns, func() error { return udpPoke(n.ifname, hop) }); ferr != nil {
		return fmt.Errorf("trigger resolution: NTF_USE: %w; UDP fallback: %w", err, ferr)
	}
	return nil
}

func udpPoke(ifname string, hop [4]byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: hop}); err != nil {
		return err
	}
	_, err = unix.Write(fd, nil)
	return err
}

// periodic resubscribes after lost events, re-resolves routes after route
// changes, refreshes stale next hops still in use, and sweeps idle entries.
func (w *neighWorker) periodic(now time.Time) {
	n := w.n
	if w.subDone == nil {
		_ = w.subscribe() // failed: try again on the next tick
	}
	s := n.snap.Load()
	if w.routesDirty {
		w.routesDirty = false
		routes := make(map[[4]byte]*routeEntry, s.routes.len())
		differ := false
		s.routes.each(func(dst [4]byte, r *routeEntry) {
			hop, err := w.routeHop(dst)
			if err != nil {
				differ = true // dropped: the next miss re-resolves and records why
				return
			}
			if hop != r.hop {
				nr := &routeEntry{hop: hop}
				nr.used.Store(r.used.Load())
				r, differ = nr, true
			}
			routes[dst] = r
		})
		if differ {
			s = &neighSnap{routes: newCowMap(routes), hops: s.hops}
			n.publish(s)
		}
	}
	s.hops.each(func(hop [4]byte, e *hopEntry) {
		if e.used.Load() && w.kern[hop].state&netlink.NUD_STALE != 0 {
			if t, ok := w.lastTrigger[hop]; ok && now.Sub(t) < neighRetry {
				return
			}
			w.lastTrigger[hop] = now
			e.used.Store(false)
			if err := w.trigger(hop); err == nil {
				n.mu.Lock()
				n.stats.Refreshes++
				n.mu.Unlock()
			}
		}
	})
	for k, t := range w.lastTry {
		if now.Sub(t) > 10*neighRetry {
			delete(w.lastTry, k)
		}
	}
	for k, t := range w.lastTrigger {
		if now.Sub(t) > 10*neighRetry {
			delete(w.lastTrigger, k)
		}
	}
	if now.Sub(w.lastSweep) >= neighSweep {
		w.lastSweep = now
		routes := make(map[[4]byte]*routeEntry, s.routes.len())
		s.routes.each(func(dst [4]byte, r *routeEntry) {
			if r.used.Load() {
				r.used.Store(false)
				routes[dst] = r
			}
		})
		s.hops.each(func(_ [4]byte, e *hopEntry) { e.used.Store(false) })
		if len(routes) != s.routes.len() {
			n.publish(&neighSnap{routes: newCowMap(routes), hops: s.hops})
		}
	}
}

// inNamespace runs fn on a thread in ns (the worker may run on a thread of
// another namespace than the one Neighbors was created in).
func inNamespace(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	cur, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer cur.Close()
	if cur.Equal(ns) {
		runtime.UnlockOSThread()
		return fn()
	}
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(cur); err != nil {
		// Leave the thread locked: the runtime retires it with the goroutine.
		return errors.Join(ferr, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
