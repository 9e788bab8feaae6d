package tcpstate

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"understudy/rewrite"
)

// TestLastAnswer: a server answers when it sends reply bytes past where
// either server had sent when the client last sent data. The rest of an
// earlier reply (all a hung server's kernel still sends from its socket) is
// data, not an answer, even from a backup that lags the primary by a whole
// reply.
func TestLastAnswer(t *testing.T) {
	type step struct {
		what       string
		fromClient bool
		server     [4]byte
		seq        func(b *bed) rewrite.Seq // of the segment
		ack        func(b *bed) rewrite.Seq
		n          int // payload bytes
		// answered: the servers whose LastAnswer this step moves; sent: the
		// servers whose LastData it moves.
		answered, sent [2]bool
	}
	cli := func(off uint32) func(b *bed) rewrite.Seq {
		return func(b *bed) rewrite.Seq { return b.cISN.Add(1 + off) }
	}
	pri := func(off uint32) func(b *bed) rewrite.Seq {
		return func(b *bed) rewrite.Seq { return b.pISN.Add(1 + off) }
	}
	bak := func(off uint32) func(b *bed) rewrite.Seq {
		return func(b *bed) rewrite.Seq { return b.bISN.Add(1 + off) }
	}
	steps := []step{
		// withRequest sent the first request, 100 bytes.
		{what: "primary's reply 1, first part", server: primaryIP, seq: pri(0), ack: cli(100), n: 600,
			answered: [2]bool{true, false}, sent: [2]bool{true, false}},
		{what: "primary's reply 1, rest", server: primaryIP, seq: pri(600), ack: cli(100), n: 400,
			sent: [2]bool{true, false}},
		{what: "backup's reply 1, first part", server: backupIP, seq: bak(0), ack: cli(100), n: 300,
			answered: [2]bool{false, true}, sent: [2]bool{false, true}},
		{what: "the client's ACK of reply 1, no data", fromClient: true, seq: cli(100), ack: pri(1000)},
		{what: "backup's reply 1, more", server: backupIP, seq: bak(300), ack: cli(100), n: 300,
			sent: [2]bool{false, true}},
		{what: "request 2", fromClient: true, seq: cli(100), ack: pri(1000), n: 100},
		{what: "backup's reply 1, rest, after request 2", server: backupIP, seq: bak(600), ack: cli(200), n: 400,
			sent: [2]bool{false, true}},
		{what: "backup's reply 2", server: backupIP, seq: bak(1000), ack: cli(200), n: 500,
			answered: [2]bool{false, true}, sent: [2]bool{false, true}},
		{what: "primary's reply 2", server: primaryIP, seq: pri(1000), ack: cli(200), n: 500,
			answered: [2]bool{true, false}, sent: [2]bool{true, false}},
		{what: "primary's reply 2, resent", server: primaryIP, seq: pri(1000), ack: cli(200), n: 500,
			sent: [2]bool{true, false}},
		{what: "primary's reply 2, more", server: primaryIP, seq: pri(1500), ack: cli(200), n: 500,
			sent: [2]bool{true, false}},
	}
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			for _, s := range steps {
				b.now += int64(time.Millisecond)
				var data, answer [2]int64
				for i := range data {
					data[i], answer[i] = b.tab.LastData(i), b.tab.LastAnswer(i)
				}
				payload := bytes.Repeat([]byte("y"), s.n)
				if s.fromClient {
					b.feed(true, b.fromClient(s.seq(b), s.ack(b), rewrite.ACK|rewrite.PSH, cTS0+5, pTS0+5), payload)
				} else {
					b.feed(false, b.fromServer(s.server, s.seq(b), s.ack(b), rewrite.ACK|rewrite.PSH, 500, 0, cTS0+5), payload)
				}
				for i := range data {
					if moved := b.tab.LastAnswer(i) != answer[i]; moved != s.answered[i] || moved && b.tab.LastAnswer(i) != b.now {
						t.Errorf("%s: server %d's LastAnswer %d → %d, want moved %v", s.what, i, answer[i], b.tab.LastAnswer(i), s.answered[i])
					}
					if moved := b.tab.LastData(i) != data[i]; moved != s.sent[i] {
						t.Errorf("%s: server %d's LastData %d → %d, want moved %v", s.what, i, data[i], b.tab.LastData(i), s.sent[i])
					}
				}
			}
		})
	}
}

// keepAlive drives n request/reply rounds on a flow withRequest opened (its
// first request, 100 bytes, already sent): each round the primary sends its
// reply, the client acknowledges it with its next request of 100 bytes,
// and then the backup's reply arrives, extra bytes longer than the
// primary's (0: the same). It returns, per round, whether each server's
// reply moved its LastAnswer.
func keepAlive(b *bed, n, reply, extra int) (answered [][2]bool) {
	var cOff, pOff, bOff uint32 = 100, 0, 0
	for k := range n {
		ts := uint32(10 + k)
		b.now += int64(time.Millisecond)
		var before [2]int64
		for i := range before {
			before[i] = b.tab.LastAnswer(i)
		}
		// Bytes that repeat nowhere, so that replies of different
		// lengths put different bytes at the same offsets.
		body := make([]byte, reply+max(extra, 0))
		for j := range body {
			body[j] = byte((k*reply+j)*2654435761>>13) | 1
		}
		b.feed(false, b.fromServer(primaryIP, b.pISN.Add(1+pOff), b.cISN.Add(1+cOff), rewrite.ACK|rewrite.PSH, 500, pTS0+ts, cTS0+ts),
			body[:reply])
		pOff += uint32(reply)
		b.feed(true, b.fromClient(b.cISN.Add(1+cOff), b.pISN.Add(1+pOff), rewrite.ACK|rewrite.PSH, cTS0+ts, pTS0+ts),
			bytes.Repeat([]byte("r"), 100))
		cOff += 100
		b.feed(false, b.fromServer(backupIP, b.bISN.Add(1+bOff), b.cISN.Add(1+cOff), rewrite.ACK|rewrite.PSH, 500, bTS0+ts, cTS0+ts),
			body[:reply+extra])
		bOff += uint32(reply + extra)
		answered = append(answered, [2]bool{b.tab.LastAnswer(0) != before[0], b.tab.LastAnswer(1) != before[1]})
	}
	return answered
}

// TestLastAnswerLaggingBackup: a backup a whole reply behind the primary
// (each of its replies comes after the client's next request, as under
// load) still answers: a leg waiting to answer keeps the older request's
// point. Were it moved to each new request, the backup would never be seen
// answering and its probe timeouts would count after a second.
func TestLastAnswerLaggingBackup(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			got := keepAlive(b, 50, 600, 0)
			pri, bak := 0, 0
			for _, a := range got {
				pri += b2i(a[0])
				bak += b2i(a[1])
			}
			// The backup's reply to a request lies past the point of the
			// request it waits on only every other round.
			if pri != 50 || bak < 24 {
				t.Errorf("of 50 rounds the primary answered in %d, the lagging backup in %d; want 50 and at least 24", pri, bak)
			}
		})
	}
}

// TestLastAnswerUnequalReplies: once the replies differ in length the
// legs' offsets no longer line up, and each leg is judged by its own
// position when it was asked: both servers answer every request, whichever
// is longer, including a shorter leg asked before the difference was seen
// (its one round missed is all the wait that costs).
func TestLastAnswerUnequalReplies(t *testing.T) {
	for _, extra := range []int{8, -8, -100} {
		for _, tc := range isns {
			t.Run(fmt.Sprintf("backup %+d bytes/%s", extra, tc.name), func(t *testing.T) {
				b := withRequest(t, tc, 100)
				got := keepAlive(b, 60, 200, extra)
				if !b.flow().cmp.diverged() {
					t.Fatal("the comparison did not see the replies differ")
				}
				// Until the comparison has seen a difference, a lagging
				// leg waits on the other's position: a round at most.
				for k, a := range got[2:] {
					if !a[0] || !a[1] {
						t.Errorf("round %d: answered %v, want both", k+2, a)
					}
				}
			})
		}
	}
}

// TestLastAnswerWhileDraining: after the client's reset, a backup that
// lagged goes on sending its replies to the client's earlier requests
// (drainShadow). They are answers: a backup draining a long queue of them
// is not hung.
func TestLastAnswerWhileDraining(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			r1, r2 := bytes.Repeat([]byte("a"), 600), bytes.Repeat([]byte("b"), 600)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, pTS0+1, cTS0+2), r1)
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, bTS0+1, cTS0+2), r1)
			b.feed(true, b.fromClient(b.cISN+101, b.pISN+601, rewrite.ACK|rewrite.PSH, cTS0+3, pTS0+1), bytes.Repeat([]byte("q"), 100))
			b.feed(false, b.fromServer(primaryIP, b.pISN+601, b.cISN+201, rewrite.ACK|rewrite.PSH, 500, pTS0+2, cTS0+3), r2)
			b.feed(true, b.fromClient(b.cISN+201, b.pISN+1201, rewrite.ACK, cTS0+4, pTS0+2), nil)
			b.feed(true, b.fromClient(b.cISN+201, b.pISN+1201, rewrite.RST|rewrite.ACK, cTS0+5, pTS0+2), nil)
			if !b.flow().legs[1].rstHeld {
				t.Fatal("the lagging backup is not draining after the client's reset")
			}
			b.now += int64(time.Millisecond)
			b.feed(false, b.fromServer(backupIP, b.bISN+601, b.cISN+201, rewrite.ACK|rewrite.PSH, 500, bTS0+2, cTS0+3), r2[:300])
			if b.tab.LastAnswer(1) != b.now {
				t.Fatalf("the draining backup's reply 2 was no answer (LastData %d, now %d)", b.tab.LastData(1), b.now)
			}
		})
	}
}

// TestLastAnswerAfterTakeover: after the primary is taken over, the backup
// that lagged it is alone on the flow; the rest of the earlier reply, which
// the client already has, is no answer to the client's next request.
func TestLastAnswerAfterTakeover(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			reply := bytes.Repeat([]byte("y"), 1000)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, pTS0+5, cTS0+2), reply)
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, bTS0+5, cTS0+2), reply[:400])
			b.feed(true, b.fromClient(b.cISN+101, b.pISN+1001, rewrite.ACK, cTS0+3, pTS0+5), nil)
			b.now += int64(time.Millisecond)
			b.tab.ServerDown(b.now, 0, "probe")
			b.tick(0)
			b.now += int64(time.Millisecond)
			b.feed(true, b.fromClient(b.cISN+101, b.pISN+1001, rewrite.ACK|rewrite.PSH, cTS0+4, pTS0+5), bytes.Repeat([]byte("r"), 100))
			b.now += int64(time.Millisecond)
			before := b.tab.LastAnswer(1)
			b.feed(false, b.fromServer(backupIP, b.bISN+401, b.cISN+201, rewrite.ACK|rewrite.PSH, 500, bTS0+6, cTS0+4), reply[400:])
			if b.tab.LastAnswer(1) != before {
				t.Fatal("the backup's rest of reply 1, after request 2, counted as an answer")
			}
			b.now += int64(time.Millisecond)
			b.feed(false, b.fromServer(backupIP, b.bISN+1001, b.cISN+201, rewrite.ACK|rewrite.PSH, 500, bTS0+7, cTS0+4), reply[:300])
			if b.tab.LastAnswer(1) != b.now {
				t.Fatal("the backup's reply 2 was no answer")
			}
		})
	}
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}
