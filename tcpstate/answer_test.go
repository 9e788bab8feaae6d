package tcpstate

import (
	"bytes"
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
	cli := func(off uint32) func(b *bed) rewrite.Seq { return func(b *bed) rewrite.Seq { return b.cISN.Add(1 + off) } }
	pri := func(off uint32) func(b *bed) rewrite.Seq { return func(b *bed) rewrite.Seq { return b.pISN.Add(1 + off) } }
	bak := func(off uint32) func(b *bed) rewrite.Seq { return func(b *bed) rewrite.Seq { return b.bISN.Add(1 + off) } }
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
