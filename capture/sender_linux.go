package capture

import (
	"fmt"
	"net"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sender transmits whole Ethernet frames on one interface (AF_PACKET
// SOCK_RAW, protocol 0 so it receives nothing, bound to the interface; send
// with write(2): zero allocations). Send is safe for concurrent use.
type Sender struct {
	ifname string
	fd     int
	mac    [6]byte
	mtu    int
	vnet   bool // PACKET_VNET_HDR: every frame goes with a virtio_net_hdr

	bufferWaits atomic.Uint64 // batch sends that found the socket's buffer full
}

// OpenSender opens a blocking transmit socket bound to ifname.
func OpenSender(ifname string) (*Sender, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture: open sender on %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("capture: open sender on %s: not an Ethernet interface (hardware address %q)", ifname, ifi.HardwareAddr)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("capture: open sender on %s: socket: %w", ifname, err)
	}
	// Protocol 0 in bind keeps the socket off every receive path.
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("capture: open sender on %s: bind: %w", ifname, err)
	}
	s := &Sender{ifname: ifname, fd: fd, mtu: ifi.MTU}
	copy(s.mac[:], ifi.HardwareAddr)
	return s, nil
}

// KeepOffloads has the kernel take each frame with a virtio_net_hdr
// (PACKET_VNET_HDR): a Batch's AddOffload can then ask it to complete a
// partial TCP checksum and to cut a super-frame into segments. Call before
// NewBatch.
func (s *Sender) KeepOffloads() error {
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("capture: sender on %s: PACKET_VNET_HDR: %w", s.ifname, err)
	}
	s.vnet = true
	return nil
}

// noOffload is the virtio_net_hdr of a frame that asks nothing of the kernel.
var noOffload [vnetHdrLen]byte

// Send writes one whole Ethernet frame. The socket blocks while the device
// queue is full; an error (ENOBUFS, EMSGSIZE for a frame over the MTU, ENETDOWN
// ...) means the frame was not sent and is for the caller to count.
func (s *Sender) Send(frame []byte) error {
	var n int
	var err error
	if s.vnet && len(frame) > 0 {
		// The frame after a header that asks nothing of the kernel; a
		// writev on iovecs of the stack, as Writev would allocate them.
		iov := [2]unix.Iovec{{Base: &noOffload[0]}, {Base: &frame[0]}}
		iov[0].SetLen(vnetHdrLen)
		iov[1].SetLen(len(frame))
		r, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(s.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		n = int(r) - vnetHdrLen
		if errno != 0 {
			err = errno
		}
	} else {
		n, err = unix.Write(s.fd, frame)
	}
	if err != nil {
		return fmt.Errorf("capture: send on %s: %w", s.ifname, err)
	}
	if n != len(frame) {
		return fmt.Errorf("capture: send on %s: short write %d of %d", s.ifname, n, len(frame))
	}
	return nil
}

// BufferWaits returns how many batch sends found the socket's buffer full
// and waited for room: frames the device queue had not yet let go of.
func (s *Sender) BufferWaits() uint64 { return s.bufferWaits.Load() }

// MAC returns the interface hardware address read at open.
func (s *Sender) MAC() [6]byte { return s.mac }

// MTU returns the interface MTU read at open.
func (s *Sender) MTU() int { return s.mtu }

// Fd returns the socket's file descriptor.
func (s *Sender) Fd() int { return s.fd }

// Close closes the socket.
func (s *Sender) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return fmt.Errorf("capture: close sender on %s: %w", s.ifname, err)
	}
	return nil
}
