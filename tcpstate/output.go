package tcpstate

import "understudy/rewrite"

// Side says which interface a frame leaves by.
type Side uint8

const (
	ClientSide Side = iota
	ServerSide
)

// Out is one frame to transmit. Frame starts with a placeholder Ethernet
// header the sender fills from the destination address in the IPv4 header.
type Out struct {
	Side  Side
	Frame []byte
	// Offload is what the frame asks of the kernel on transmit: set only
	// for a forwarded frame the datapath parsed under KeepOffloads.
	Offload rewrite.Offload
}

// maxOut bounds the frames one call may emit; a timer sweep that needs more
// is resumed on the next call.
const maxOut = 32

// Output collects the frames one call emits. It owns preallocated buffers so
// the per-segment path allocates nothing; frames are valid until Reset.
type Output struct {
	Frames []Out
	bufs   [maxOut][]byte
	used   int
	pkt    rewrite.Packet
}

// NewOutput makes an Output whose buffers hold frames of up to frameSize bytes.
func NewOutput(frameSize int) *Output {
	o := &Output{Frames: make([]Out, 0, maxOut)}
	for i := range o.bufs {
		o.bufs[i] = make([]byte, frameSize)
	}
	return o
}

// Reset forgets the emitted frames so the buffers can be reused.
func (o *Output) Reset() {
	o.Frames = o.Frames[:0]
	o.used = 0
}

// Full reports whether another frame would not fit.
func (o *Output) Full() bool { return len(o.Frames) >= maxOut || o.used >= maxOut }

// room reports whether n more frames fit.
func (o *Output) room(n int) bool {
	return len(o.Frames)+n <= maxOut && o.used+n <= maxOut
}

func (o *Output) buf() []byte {
	b := o.bufs[o.used]
	o.used++
	return b
}

func (o *Output) emit(side Side, frame []byte) {
	o.Frames = append(o.Frames, Out{Side: side, Frame: frame})
}

// emitPacket emits a forwarded segment, with what it asks of the kernel.
func (o *Output) emitPacket(side Side, p *rewrite.Packet) {
	o.Frames = append(o.Frames, Out{Side: side, Frame: p.Frame(), Offload: p.Offload()})
}
