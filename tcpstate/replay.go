package tcpstate

// A chunk holds one stretch of a leg's reply stream.
const chunkSize = 2048

type chunk struct {
	off  uint32 // stream offset of data[0]
	n    int
	data [chunkSize]byte
}

// replay keeps the bytes the shadow leg has sent that the client has not yet
// acknowledged, contiguous from the oldest. After a takeover they reach the
// client at once: the backup would otherwise resend them only after its
// retransmission timeout, and the client's stall would be that timeout.
type replay struct {
	chunks []*chunk
	end    uint32 // stream offset just past the last byte held
	active bool   // holding a contiguous stretch
	broken bool   // a gap or the memory budget stopped buffering
	bytes  int
}

// bufferReply appends the part of data at stream offset off beyond what is
// held; a gap or the memory budget stops buffering for the flow.
func (t *Table) bufferReply(f *Flow, off uint32, data []byte) {
	r := &f.replay
	if f.cli.hasAck {
		// Bytes the client already acknowledged are never needed.
		ack := f.legs[f.vis].offset(f.cli.ack)
		if int32(ack-(off+uint32(len(data)))) >= 0 {
			return
		}
		if d := int32(ack - off); d > 0 {
			data, off = data[d:], ack
		}
		if len(r.chunks) == 0 && (r.broken || r.active && int32(ack-r.end) > 0) {
			r.active, r.broken = false, false // nothing held: start afresh here
		}
	}
	if r.broken || len(data) == 0 {
		return
	}
	if !r.active {
		r.active, r.end = true, off
	}
	d := int32(r.end - off)
	switch {
	case d < 0:
		// A gap: the leg's segment was lost on the way. What lies beyond
		// it cannot be replayed in order; the backup will resend it.
		r.broken = true
		return
	case int(d) >= len(data):
		return // a retransmission of bytes already held
	}
	data = data[d:]
	if r.bytes+len(data) > t.cfg.ReplayPerFlow || t.replayBytes+len(data) > t.cfg.ReplayBudget {
		r.broken = true
		t.count(ReplayOverflows)
		return
	}
	for len(data) > 0 {
		var c *chunk
		if k := len(r.chunks); k > 0 && r.chunks[k-1].n < chunkSize {
			c = r.chunks[k-1]
		} else {
			c = t.newChunk()
			c.off = r.end
			r.chunks = append(r.chunks, c)
		}
		n := copy(c.data[c.n:], data)
		c.n += n
		r.end += uint32(n)
		r.bytes += n
		t.replayBytes += n
		data = data[n:]
	}
}

// trimReplay frees what the client has acknowledged: stream offsets below upto.
func (t *Table) trimReplay(f *Flow, upto uint32) {
	r := &f.replay
	k := 0
	for ; k < len(r.chunks); k++ {
		c := r.chunks[k]
		if int32(upto-(c.off+uint32(c.n))) < 0 {
			break
		}
		r.bytes -= c.n
		t.replayBytes -= c.n
		t.freeChunk(c)
	}
	if k > 0 {
		n := copy(r.chunks, r.chunks[k:])
		clear(r.chunks[n:])
		r.chunks = r.chunks[:n]
	}
	if len(r.chunks) == 0 && r.broken && int32(upto-r.end) >= 0 {
		// Everything before the gap is acknowledged: start afresh.
		r.active, r.broken = false, false
	}
}

// dropReplay frees every byte held for f.
func (t *Table) dropReplay(f *Flow) {
	r := &f.replay
	for _, c := range r.chunks {
		t.replayBytes -= c.n
		t.freeChunk(c)
	}
	clear(r.chunks)
	*r = replay{chunks: r.chunks[:0], broken: true}
}

// at returns up to max bytes held at stream offset off.
func (r *replay) at(off uint32, max int) []byte {
	for _, c := range r.chunks {
		if d := int32(off - c.off); d >= 0 && int(d) < c.n {
			return c.data[d:min(c.n, int(d)+max)]
		}
	}
	return nil
}

// maxFreeChunks bounds the memory kept for reuse after a burst.
const maxFreeChunks = 4096

func (t *Table) newChunk() *chunk {
	if k := len(t.freeChunks); k > 0 {
		c := t.freeChunks[k-1]
		t.freeChunks = t.freeChunks[:k-1]
		c.n = 0
		return c
	}
	return new(chunk)
}

func (t *Table) freeChunk(c *chunk) {
	if len(t.freeChunks) < maxFreeChunks {
		t.freeChunks = append(t.freeChunks, c)
	}
}
