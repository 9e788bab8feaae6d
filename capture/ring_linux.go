package capture

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Ring is a TPACKET_V2 receive ring bound to one interface. Next and Release
// must be called from one goroutine at a time; Stats, Fd and Wait may be
// called from any.
type Ring struct {
	ifname     string
	fd         int
	mem        []byte
	frameSize  int
	framesPerB int
	blockSize  int
	frames     int
	cur        int
	held       bool
	vnet       bool

	statsMu      sync.Mutex
	packets, drp uint64
}

// tpacket2_hdr field offsets (see unix.Tpacket2Hdr).
const (
	t2Status  = 0
	t2Len     = 4
	t2Snaplen = 8
	t2Mac     = 12
)

// OpenRing opens an ETH_P_ALL AF_PACKET socket on ifname, attaches filter
// before bind, sets PACKET_IGNORE_OUTGOING, PACKET_VERSION=TPACKET_V2, an RX
// ring of cfg size, mmaps it, and binds to the interface. Non-blocking. A nil
// filter captures everything.
func OpenRing(ifname string, filter []bpf.RawInstruction, cfg RingConfig) (*Ring, error) {
	cfg = cfg.withDefaults()
	fail := func(op string, err error) (*Ring, error) {
		return nil, fmt.Errorf("capture: open ring on %s: %s: %w", ifname, op, err)
	}
	if cfg.FrameSize < 128 || cfg.FrameSize%unix.TPACKET_ALIGNMENT != 0 {
		return fail("config", fmt.Errorf("frame size %d must be a multiple of %d and at least 128", cfg.FrameSize, unix.TPACKET_ALIGNMENT))
	}
	if cfg.FrameCount <= 0 {
		return fail("config", fmt.Errorf("frame count %d must be positive", cfg.FrameCount))
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fail("interface", err)
	}

	// Protocol 0: the socket receives nothing until bind, so no frame of
	// another interface, or one the filter would reject, is ever queued.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}
	r := &Ring{ifname: ifname, fd: fd}
	ok := false
	defer func() {
		if !ok {
			r.Close()
		}
	}()

	if filter != nil {
		if err := AttachFilter(fd, filter); err != nil {
			return fail("attach filter", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail("PACKET_VERSION", err)
	}
	if cfg.VnetHdr {
		// Before the ring: the kernel refuses it on a socket with one.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fail("PACKET_VNET_HDR", err)
		}
		r.vnet = true
	}

	block, perBlock, blocks := ringGeometry(unix.Getpagesize(), cfg.FrameSize, cfg.FrameCount)
	req := unix.TpacketReq{
		Block_size: uint32(block),
		Block_nr:   uint32(blocks),
		Frame_size: uint32(cfg.FrameSize),
		Frame_nr:   uint32(blocks * perBlock),
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail(fmt.Sprintf("PACKET_RX_RING %+v", req), err)
	}
	mem, err := unix.Mmap(fd, 0, block*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("mmap", err)
	}
	r.mem, r.frameSize, r.framesPerB, r.blockSize, r.frames = mem, cfg.FrameSize, perBlock, block, blocks*perBlock

	sa := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, &sa); err != nil {
		return fail("bind", err)
	}
	ok = true
	return r, nil
}

// ringGeometry lays count frames of frameSize out in blocks: whole pages, a
// power of two of them (the kernel allocates power-of-two orders anyway),
// holding whole frames. A frame larger than a page gets blocks of about
// sixteen frames: a block of one 64 KiB super-frame slot would be half
// padding.
func ringGeometry(page, frameSize, count int) (block, perBlock, blocks int) {
	want := frameSize
	if frameSize > page {
		want = 16 * frameSize
	}
	block = page
	for block < want {
		block *= 2
	}
	perBlock = block / frameSize
	blocks = (count + perBlock - 1) / perBlock
	return block, perBlock, blocks
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (r *Ring) slot(i int) []byte {
	off := (i/r.framesPerB)*r.blockSize + (i%r.framesPerB)*r.frameSize
	return r.mem[off : off+r.frameSize : off+r.frameSize]
}

func status(s []byte) *uint32 { return (*uint32)(unsafe.Pointer(&s[t2Status])) }

func (r *Ring) ready(i int) bool {
	return atomic.LoadUint32(status(r.slot(i)))&unix.TP_STATUS_USER != 0
}

// Next returns the next frame owned by user space, false if none; it does not
// block. A frame still held from the previous Next is released first.
func (r *Ring) Next() (Frame, bool) {
	if r.held {
		r.Release()
	}
	s := r.slot(r.cur)
	// The atomic load orders the reads of the header and data after the
	// kernel's status store (it writes the status last, after a barrier).
	st := atomic.LoadUint32(status(s))
	if st&unix.TP_STATUS_USER == 0 {
		return Frame{}, false
	}
	wire := int(*(*uint32)(unsafe.Pointer(&s[t2Len])))
	snap := int(*(*uint32)(unsafe.Pointer(&s[t2Snaplen])))
	mac := int(*(*uint16)(unsafe.Pointer(&s[t2Mac])))
	if mac > len(s) {
		mac = len(s)
	}
	if snap > len(s)-mac {
		snap = len(s) - mac
	}
	r.held = true
	f := Frame{
		Data:        s[mac : mac+snap : mac+snap],
		WireLen:     wire,
		CsumPartial: st&unix.TP_STATUS_CSUMNOTREADY != 0,
	}
	if r.vnet && mac >= vnetHdrLen {
		f.GSOSize = vnetGSOSize(s[mac-vnetHdrLen : mac])
	}
	return f, true
}

// Release hands the frame returned by Next back to the kernel. It does
// nothing if no frame is held.
func (r *Ring) Release() {
	if !r.held {
		return
	}
	atomic.StoreUint32(status(r.slot(r.cur)), unix.TP_STATUS_KERNEL)
	r.held = false
	r.cur++
	if r.cur == r.frames {
		r.cur = 0
	}
}

// Fd returns the packet socket's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// Stats returns the totals since the ring was opened of the frames that
// passed the filter (packets, including drops) and of those the kernel dropped
// because the ring was full (PACKET_STATISTICS; the kernel resets its counters
// on every read, so they are accumulated here).
func (r *Ring) Stats() (packets, drops uint64, err error) {
	st, err := unix.GetsockoptTpacketStats(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	if err != nil {
		return r.packets, r.drp, fmt.Errorf("capture: ring stats on %s: %w", r.ifname, err)
	}
	r.packets += uint64(st.Packets)
	r.drp += uint64(st.Drops)
	return r.packets, r.drp, nil
}

// Close unmaps the ring and closes the socket.
func (r *Ring) Close() error {
	var errs []error
	if r.mem != nil {
		if err := unix.Munmap(r.mem); err != nil {
			errs = append(errs, err)
		}
		r.mem = nil
	}
	if r.fd >= 0 {
		if err := unix.Close(r.fd); err != nil {
			errs = append(errs, err)
		}
		r.fd = -1
	}
	if len(errs) > 0 {
		return fmt.Errorf("capture: close ring on %s: %w", r.ifname, errs[0])
	}
	return nil
}

// Wait blocks until one of rings has a frame ready or timeout passes (ppoll(2));
// zero allocs for up to 16 rings. A negative timeout waits forever. An
// interrupted poll returns nil early, and so does one the kernel could not
// make for want of memory, after at most a millisecond: a gateway that
// stopped on a passing shortage would drop every connection it carries.
// Wait must not run concurrently with Next or Release on the same rings.
func Wait(rings []*Ring, timeout time.Duration) error {
	for _, r := range rings {
		if r.ready(r.cur) {
			return nil
		}
	}
	var buf [16]unix.PollFd
	fds := buf[:0]
	for _, r := range rings {
		fds = append(fds, unix.PollFd{Fd: int32(r.fd), Events: unix.POLLIN})
	}
	// ppoll, not poll: a timeout finer than a millisecond is honoured.
	var ts *unix.Timespec
	if timeout >= 0 {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	_, err := unix.Ppoll(fds, ts, nil)
	return afterPoll(err, timeout)
}

// afterPoll is Wait's result for ppoll's error: an interrupted poll, or
// one the kernel could not make for want of memory (after a pause of at
// most a millisecond), is a wait that ended early.
func afterPoll(err error, timeout time.Duration) error {
	switch err {
	case nil, unix.EINTR:
	case unix.ENOMEM, unix.EAGAIN:
		d := time.Millisecond
		if timeout >= 0 {
			d = min(d, timeout)
		}
		time.Sleep(d)
	default:
		return fmt.Errorf("capture: poll rings: %w", err)
	}
	return nil
}

// Spin checks rings for a ready frame until d has passed, yielding the CPU
// between checks (sched_yield), and reports whether one is ready. Waking a
// thread blocked in poll costs tens of microseconds on a virtual machine;
// a loop that spins briefly after its last frame catches the next one of a
// request/response exchange without that cost, while a yield lets a
// process that shares the core run.
func Spin(rings []*Ring, d time.Duration) bool {
	var deadline time.Time
	for i := 0; ; i++ {
		for _, r := range rings {
			if r.ready(r.cur) {
				return true
			}
		}
		// time.Now is a vDSO call: read it every few rounds only.
		if i&7 == 0 {
			now := time.Now()
			if deadline.IsZero() {
				deadline = now.Add(d)
			} else if now.After(deadline) {
				return false
			}
		}
		// Raw: the scheduler need not hear of a call that never blocks
		// (see Batch.sendmmsg).
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
}

// AttachFilter attaches a classic BPF program to socket fd.
func AttachFilter(fd int, filter []bpf.RawInstruction) error {
	if len(filter) == 0 || len(filter) > 0xffff {
		return fmt.Errorf("bad filter length %d", len(filter))
	}
	prog := make([]unix.SockFilter, len(filter))
	for i, ins := range filter {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
}
