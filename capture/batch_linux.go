package capture

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
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
	errs   []error // each queued frame's fate, from send until settle
	n      int
	report func(frame []byte, err error)
}

// ErrFrameTooLarge is reported for a frame larger than the batch's frames.
var ErrFrameTooLarge = errors.New("capture: frame larger than the batch's frame size")

// NewBatch makes a batch of up to size frames of up to frameSize bytes for
// s. report, if not nil, learns the fate of every frame once it is sent
// (err nil) or refused (ENOBUFS, EMSGSIZE, ENETDOWN ..., or
// ErrFrameTooLarge); the frame is only valid during the call.
func (s *Sender) NewBatch(size, frameSize int, report func(frame []byte, err error)) *Batch {
	b := &Batch{s: s, bufs: make([][]byte, size), msgs: make([]unix.Mmsghdr, size), iovs: make([]unix.Iovec, size),
		errs: make([]error, size), report: report}
	mem := make([]byte, size*frameSize)
	for i := range b.bufs {
		b.bufs[i] = mem[i*frameSize : (i+1)*frameSize : (i+1)*frameSize]
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
	if b.n == len(b.bufs) {
		failed = b.Flush()
	}
	buf := b.bufs[b.n]
	if len(frame) > len(buf) {
		b.tell(frame, ErrFrameTooLarge)
		return failed + 1
	}
	n := copy(buf, frame)
	b.iovs[b.n].Base = &buf[0]
	b.iovs[b.n].SetLen(n)
	b.n++
	return failed
}

// Flush sends every queued frame and empties the batch. It returns how many
// the kernel refused (ENOBUFS, EMSGSIZE, ENETDOWN ...): such a frame is
// skipped and the rest are still sent. While the socket's buffer is full
// (a device queue holds its frames) it waits for room, as Send does.
func (b *Batch) Flush() (failed int) {
	b.send()
	return b.settle()
}

// send transmits the queued frames and records each one's fate for settle.
func (b *Batch) send() {
	for i := 0; i < b.n; {
		r, errno := b.sendmmsg(i)
		switch {
		case errno == unix.EINTR:
			continue
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
}

// sendmmsg sends the queued frames from i on, without telling the Go
// scheduler (RawSyscall), so the call must not block: MSG_DONTWAIT. On a
// veth link one call runs the receivers' receive paths and can take tens of
// microseconds; a scheduler told of it hands the caller's P to another
// thread meanwhile, and the caller waits for a P on its return. On a virtual
// machine those thread switches cost more than the send. Only when the
// socket's buffer is full (EAGAIN: a device queue holds its frames) is the
// call made again as a blocking one the scheduler knows of, and counted.
func (b *Batch) sendmmsg(i int) (uintptr, unix.Errno) {
	msgs := uintptr(unsafe.Pointer(&b.msgs[i]))
	r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(b.s.fd), msgs, uintptr(b.n-i), unix.MSG_DONTWAIT, 0, 0)
	if errno == unix.EAGAIN {
		b.s.bufferWaits.Add(1)
		r, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(b.s.fd), msgs, uintptr(b.n-i), 0, 0, 0)
	}
	return r, errno
}

// settle tells report the fate send recorded for each frame, empties the
// batch and returns how many frames failed.
func (b *Batch) settle() (failed int) {
	for i := 0; i < b.n; i++ {
		if b.errs[i] != nil {
			failed++
		}
		b.tell(b.bufs[i][:b.iovs[i].Len], b.errs[i])
	}
	b.n = 0
	return failed
}

func (b *Batch) tell(frame []byte, err error) {
	if b.report != nil {
		b.report(frame, err)
	}
}
