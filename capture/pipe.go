package capture

// Pipe transmits batches of frames from a goroutine of its own, so that the
// work a transmit does runs beside its caller's: on a veth link, sendmmsg
// carries the frame through the receiver's whole softirq path (bridge, TCP
// receive, and the data that receiver sends in turn), which would otherwise
// stall the loop that reads the rings. A short batch with nothing in flight
// is sent by the caller itself: handing it over would add a thread wake-up
// to an exchange's latency and save nothing.
//
// The caller fills the current batch with Add and hands it over with Send;
// every frame's fate is reported, on the caller's goroutine, by a later Send
// or Settle. Not safe for concurrent use; zero allocations after NewPipe.
type Pipe struct {
	cur    *Batch
	spare  []*Batch // settled batches ready to fill
	busy   int      // batches handed over and not yet settled
	inline int
	todo   chan *Batch
	done   chan *Batch
	closed bool
}

// NewPipe makes a pipe of depth batches of up to size frames of up to
// frameSize bytes each for s; batches of at most inline frames are sent by
// the caller when no other is in flight. report is as for NewBatch, and is
// called from Send, Settle and Close only.
func (s *Sender) NewPipe(depth, size, frameSize, inline int, report func(frame []byte, err error)) *Pipe {
	depth = max(depth, 2)
	p := &Pipe{inline: inline, spare: make([]*Batch, 0, depth),
		todo: make(chan *Batch, depth), done: make(chan *Batch, depth)}
	for range depth {
		p.spare = append(p.spare, s.NewBatch(size, frameSize, report))
	}
	p.cur = p.take()
	go p.run()
	return p
}

func (p *Pipe) run() {
	for b := range p.todo {
		b.send()
		p.done <- b
	}
}

// Add queues a copy of frame, handing the current batch over first when it
// is full. A frame larger than the pipe's frames is reported failed at once.
func (p *Pipe) Add(frame []byte) {
	if p.cur.n == len(p.cur.bufs) {
		p.Send()
	}
	p.cur.Add(frame)
}

// Send settles what was sent, then hands the queued frames over (or sends
// them itself, see Pipe). It waits only when every batch is in flight.
func (p *Pipe) Send() {
	p.Settle()
	b := p.cur
	if b.n == 0 {
		return
	}
	if p.busy == 0 && b.n <= p.inline {
		b.Flush()
		return
	}
	p.busy++
	p.todo <- b // never blocks: the channel holds every batch
	p.cur = p.take()
}

// Settle reports the frames of the batches the goroutine has sent.
func (p *Pipe) Settle() {
	for {
		select {
		case b := <-p.done:
			p.settle(b)
		default:
			return
		}
	}
}

func (p *Pipe) settle(b *Batch) {
	b.settle()
	p.busy--
	p.spare = append(p.spare, b)
}

// take returns an empty batch, waiting for one in flight if none is spare.
func (p *Pipe) take() *Batch {
	for len(p.spare) == 0 {
		p.settle(<-p.done)
	}
	b := p.spare[len(p.spare)-1]
	p.spare = p.spare[:len(p.spare)-1]
	return b
}

// Wait sends what is queued and waits until every frame is reported.
func (p *Pipe) Wait() {
	p.Send()
	for p.busy > 0 {
		p.settle(<-p.done)
	}
}

// Close is Wait, then stops the goroutine. The pipe must not be used after.
func (p *Pipe) Close() {
	if p.closed {
		return
	}
	p.closed = true
	p.Wait()
	close(p.todo)
}
