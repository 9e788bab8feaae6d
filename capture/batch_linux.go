package capture

import (
	"errors"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"understudy/rewrite"
)

// Batch queues frames for one sender and transmits them with one
// sendmmsg(2), where Send makes one write(2) per frame: the datapath sends a
// batch of ring frames' worth of output at a time. The frames are copied in,
// so the caller's buffers are free again as soon as Add returns. Not safe
// for concurrent use; zero allocations after NewBatch.
type Batch struct {
	s      *Sender
	bufs   [][]byte
	msgs   []unix.Mmsghdr
	iovs   []unix.Iovec
	errs   []error // each queued frame's fate, until Flush reports it
	n      int
	vnet   bool // each buffer starts with a virtio_net_hdr the kernel reads
	report func(frame []byte, err error)
}

// ErrFrameTooLarge is reported for a frame larger than the batch's frames.
var ErrFrameTooLarge = errors.New("capture: frame larger than the batch's frame size")

// NewBatch makes a batch of up to size frames of up to frameSize bytes for
// s; after s.KeepOffloads, each frame goes with its virtio_net_hdr. report, if not nil, learns the fate of every frame once it is sent
// (err nil) or refused (ENOBUFS, EMSGSIZE, ENETDOWN ..., or
// ErrFrameTooLarge); the frame is only valid during the call.
func (s *Sender) NewBatch(size, frameSize int, report func(frame []byte, err error)) *Batch {
	b := &Batch{s: s, bufs: make([][]byte, size), msgs: make([]unix.Mmsghdr, size), iovs: make([]unix.Iovec, size),
		errs: make([]error, size), vnet: s.vnet, report: report}
	// Every buffer has room for the header in front; a plain sender's
	// iovec starts after it.
	stride := vnetHdrLen + frameSize
	mem := make([]byte, size*stride)
	for i := range b.bufs {
		b.bufs[i] = mem[i*stride : (i+1)*stride : (i+1)*stride]
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
	}
	return b
}

// Len is the number of frames queued.
func (b *Batch) Len() int { return b.n }

// Add queues a copy of frame, first sending what is queued when the batch is
// full. It returns the frames that failed in that send (see Flush); a frame
// larger than the batch's frame size counts as failed.
func (b *Batch) Add(frame []byte) (failed int) {
	return b.AddOffload(frame, rewrite.Offload{})
}

// AddOffload is Add for a frame that asks the kernel for o: a partial TCP
// checksum to complete, a super-frame to cut into segments. On a sender
// without KeepOffloads a frame that asks for anything fails with
// ErrOffloadsOff.
func (b *Batch) AddOffload(frame []byte, o rewrite.Offload) (failed int) {
	if b.n == len(b.bufs) {
		failed = b.Flush()
	}
	buf := b.bufs[b.n]
	if len(frame) > len(buf)-vnetHdrLen {
		b.tell(frame, ErrFrameTooLarge)
		return failed + 1
	}
	if !b.vnet && o != (rewrite.Offload{}) {
		b.tell(frame, ErrOffloadsOff)
		return failed + 1
	}
	n := copy(buf[vnetHdrLen:], frame)
	start := vnetHdrLen
	if b.vnet {
		putVnetHdr(buf, o)
		start = 0
	}
	b.iovs[b.n].Base = &buf[start]
	b.iovs[b.n].SetLen(vnetHdrLen + n - start)
	b.n++
	return failed
}

// ErrOffloadsOff is reported for a frame that asks the kernel to finish it
// (AddOffload) on a sender that was not told to (Sender.KeepOffloads).
var ErrOffloadsOff = errors.New("capture: frame needs checksum or segmentation offload, which the sender was not opened for")

// Flush sends every queued frame, tells report each one's fate, empties the
// batch and returns how many failed: the kernel refused them (ENOBUFS,
// EMSGSIZE, ENETDOWN ...; such a frame is skipped and the rest are still
// sent), or the socket's buffer stayed full (a device queue held its frames)
// for longer than MaxBufferWait, and EAGAIN fails the rest.
func (b *Batch) Flush() (failed int) {
	var deadline time.Time // for room in the socket's buffer, set at the first wait
	for i := 0; i < b.n; {
		r, errno := b.sendmmsg(i)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			b.s.bufferWaits.Add(1)
			if deadline.IsZero() {
				deadline = time.Now().Add(MaxBufferWait)
			}
			if b.waitForRoom(deadline) {
				continue
			}
			for ; i < b.n; i++ {
				b.errs[i] = errno
			}
		case errno != 0:
			// The first frame left failed; the kernel says nothing of the rest.
			b.errs[i] = errno
			i++
		case r == 0:
			for ; i < b.n; i++ {
				b.errs[i] = unix.EIO
			}
		default:
			for end := i + int(r); i < end; i++ {
				b.errs[i] = nil
			}
		}
	}
	for i := 0; i < b.n; i++ {
		if b.errs[i] != nil {
			failed++
		}
		b.tell(b.bufs[i][vnetHdrLen:vnetHdrLen+b.frameLen(i)], b.errs[i])
	}
	b.n = 0
	return failed
}

// MaxBufferWait bounds how long one Flush waits in all for room in a full
// socket buffer. The caller is the datapath's only loop: while it waits no ring is
// read, so a device that stays backed up costs its frames, not every flow.
const MaxBufferWait = 5 * time.Millisecond

// sendmmsg sends the queued frames from i on without telling the Go
// scheduler (RawSyscall), so the call must not block: MSG_DONTWAIT. On a
// veth link one call runs the receivers' receive paths and can take tens of
// microseconds; a scheduler told of it hands the caller's P to another
// thread meanwhile, and the caller waits for a P on its return. On a virtual
// machine those thread switches cost more than the send. The P stays held
// for the call, which delays a garbage collection's stop by as long; the
// datapath allocates nothing, so collections are rare.
func (b *Batch) sendmmsg(i int) (uintptr, unix.Errno) {
	r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(b.s.fd),
		uintptr(unsafe.Pointer(&b.msgs[i])), uintptr(b.n-i), unix.MSG_DONTWAIT, 0, 0)
	return r, errno
}

// waitForRoom waits, as a blocking call the scheduler knows of, until the
// socket can take a frame again or deadline passes, and reports whether it
// can.
func (b *Batch) waitForRoom(deadline time.Time) bool {
	fds := [1]unix.PollFd{{Fd: int32(b.s.fd), Events: unix.POLLOUT}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		ts := unix.NsecToTimespec(int64(left))
		n, err := unix.Ppoll(fds[:], &ts, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return false
		}
		return n > 0 && fds[0].Revents&unix.POLLOUT != 0
	}
}

// frameLen is the length of queued frame i, its header not counted.
func (b *Batch) frameLen(i int) int {
	if b.vnet {
		return int(b.iovs[i].Len) - vnetHdrLen
	}
	return int(b.iovs[i].Len)
}

func (b *Batch) tell(frame []byte, err error) {
	if b.report != nil {
		b.report(frame, err)
	}
}
