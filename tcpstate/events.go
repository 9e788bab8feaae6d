package tcpstate

// EventKind names a change in one flow's life worth a log line.
type EventKind uint8

const (
	EventUnprotected EventKind = iota // the flow lost its shadow leg (Why says why)
	EventTakeover                     // the shadow took over from the failed live server
	EventReset                        // the flow was reset: it could not be carried on, or its only server reset it (Why says which)
)

var eventKindNames = [...]string{"unprotected", "takeover", "reset"}

func (k EventKind) String() string { return eventKindNames[k] }

// FlowEvent is one such change. Why is a constant string: recording an
// event allocates nothing.
type FlowEvent struct {
	Key    Key
	Kind   EventKind
	Why    string
	Server uint8 // the server the flow lost (index into Config.Servers)
}

// maxEvents bounds the events kept between two reads; more are counted as lost.
const maxEvents = 256

// events is a ring of FlowEvents the datapath reads after each batch.
type events struct {
	ring    [maxEvents]FlowEvent
	head, n int
	Lost    uint64 // events that found the ring full
}

func (e *events) add(ev FlowEvent) {
	if e.n == maxEvents {
		e.Lost++
		return
	}
	e.ring[(e.head+e.n)%maxEvents] = ev
	e.n++
}

// note records an event of flow f.
func (t *Table) note(f *Flow, kind EventKind, why string, server uint8) {
	t.events.add(FlowEvent{Key: f.key, Kind: kind, Why: why, Server: server})
}

// DrainEvents calls fn for each event recorded since the last call, oldest
// first, and returns how many were lost to a full ring since then.
func (t *Table) DrainEvents(fn func(FlowEvent)) (lost uint64) {
	e := &t.events
	for e.n > 0 {
		fn(e.ring[e.head])
		e.ring[e.head] = FlowEvent{}
		e.head = (e.head + 1) % maxEvents
		e.n--
	}
	lost, e.Lost = e.Lost, 0
	return lost
}
