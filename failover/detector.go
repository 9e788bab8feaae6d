package failover

import (
	"fmt"
	"time"
)

// Defaults for Config's zero fields.
const (
	DefaultInterval = 10 * time.Millisecond
	DefaultMisses   = 3
	DefaultRise     = 3
)

// Config sets how fast a server is declared down and back up. The zero
// value is valid: WithDefaults fills every zero field.
type Config struct {
	// Interval between two probes of one server; each probe's timeout.
	Interval time.Duration
	// Misses is how many consecutive failures take a server down. One
	// lost probe must not move every flow to the backup.
	Misses int
	// Rise is how many consecutive successes bring a server up, so that a
	// flapping server is not reintegrated on its first good answer.
	Rise int
	// Timeout bounds one probe; zero means one Interval. A longer timeout
	// tolerates a server slowed by load, at the price of slower detection
	// of a silent host (Misses timeouts).
	Timeout time.Duration
}

// WithDefaults returns c with zero (or negative) fields set to defaults.
func (c Config) WithDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Misses <= 0 {
		c.Misses = DefaultMisses
	}
	if c.Rise <= 0 {
		c.Rise = DefaultRise
	}
	if c.Timeout <= 0 {
		c.Timeout = c.Interval
	}
	return c
}

// Health is a server's state as its detector sees it.
type Health uint8

const (
	Unknown Health = iota // not yet Misses failures or Rise successes
	Up
	Down
)

func (h Health) String() string {
	switch h {
	case Unknown:
		return "unknown"
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return fmt.Sprintf("health(%d)", uint8(h))
}

// MarshalText makes Health read as a word in JSON status output.
func (h Health) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads the word MarshalText wrote, so status decodes.
func (h *Health) UnmarshalText(b []byte) error {
	for _, v := range []Health{Unknown, Up, Down} {
		if v.String() == string(b) {
			*h = v
			return nil
		}
	}
	return fmt.Errorf("failover: unknown health %q", b)
}

// Transition is a change of a server's health.
type Transition struct {
	Server int    // index: 0 primary, 1 backup
	Name   string // "primary", "backup"
	From   Health
	To     Health
	At     time.Time // when the change was decided
	Cause  string    // the last failure's cause, or why it came up
	// FirstMiss is when the streak of failures that took the server down
	// began: when its first failed probe was sent (ObserveSent), the
	// first evidence, or the carrier event for LinkDown; zero unless To
	// is Down.
	FirstMiss time.Time
	// LastGood is when the last successful probe was seen; zero if never.
	LastGood time.Time
}

// DetectionLatency is how long the failure took to confirm: At-FirstMiss,
// from the first failed probe's sending, its timeout included. Add the
// probe interval for a bound on how long the server had been dead.
func (t Transition) DetectionLatency() time.Duration {
	if t.FirstMiss.IsZero() {
		return 0
	}
	return t.At.Sub(t.FirstMiss)
}

func (t Transition) String() string {
	s := fmt.Sprintf("%s %s -> %s: %s", t.Name, t.From, t.To, t.Cause)
	if t.To == Down && !t.FirstMiss.IsZero() {
		s += fmt.Sprintf(" (detected in %v)", t.DetectionLatency())
	}
	return s
}

// Counters count what a detector was told.
type Counters struct {
	ProbesOK     uint64 `json:"probes_ok"`
	ProbesFailed uint64 `json:"probes_failed"`
	Evidence     uint64 `json:"evidence"`
	LinkDowns    uint64 `json:"link_downs"`
	Transitions  uint64 `json:"transitions"`
}

// DetectorStatus is a detector's state for status output.
type DetectorStatus struct {
	Health            Health    `json:"health"`
	ConsecutiveMisses int       `json:"consecutive_misses"`
	ConsecutiveOK     int       `json:"consecutive_ok"`
	RiseNeeded        int       `json:"rise_needed"` // good probes it needs to come up: Rise, doubled per recent flap
	LinkDown          bool      `json:"link_down"`
	LastGood          time.Time `json:"last_good"`
	LastFailure       time.Time `json:"last_failure"`
	LastCause         string    `json:"last_cause,omitempty"` // of the last failure
	Counters
}

// Detector decides one server's health from the results it is fed. It does
// no I/O and keeps no clock of its own: every method takes the current time.
// It is not safe for concurrent use; Monitor serialises its callers.
//
// Up (or Unknown) becomes Down after Config.Misses consecutive failures
// (probe failures and evidence alike), or at once on LinkDown. Down (or
// Unknown) becomes Up after Config.Rise consecutive successful probes, not
// counted while the carrier is down. Each transition is reported once.
type Detector struct {
	server int
	name   string
	cfg    Config

	health    Health
	misses    int
	oks       int
	firstMiss time.Time
	lastGood  time.Time
	lastFail  time.Time
	lastCause string
	linkDown  bool
	// lastEvidence is when evidence last counted as a miss.
	lastEvidence time.Time
	// upAt is when the server last came up; flaps counts its failures
	// each within flapWindow of its coming up before, which double the
	// good probes it needs to come up again (riseNeeded).
	upAt     time.Time
	flaps    int
	counters Counters
}

// flapWindow is how soon after coming up a failure makes the server a
// flapping one; maxFlapShift caps the doubling of Rise (3 probes become
// 3072: 31 s with 10 ms probes).
const (
	flapWindow   = 30 * time.Second
	maxFlapShift = 10
)

// riseNeeded is how many consecutive good probes bring the server up: Rise,
// doubled for each recent flap, so that a server crashing and restarting in
// a loop is not made the standby (and taken over by) each time it answers.
func (d *Detector) riseNeeded() int { return d.cfg.Rise << min(d.flaps, maxFlapShift) }

// NewDetector returns a detector for server index server named name, in
// state Unknown.
func NewDetector(server int, name string, cfg Config) *Detector {
	return &Detector{server: server, name: name, cfg: cfg.WithDefaults()}
}

// Health returns the current state.
func (d *Detector) Health() Health { return d.health }

// Status returns the state and counters.
func (d *Detector) Status() DetectorStatus {
	return DetectorStatus{
		Health:            d.health,
		ConsecutiveMisses: d.misses,
		ConsecutiveOK:     d.oks,
		RiseNeeded:        d.riseNeeded(),
		LinkDown:          d.linkDown,
		LastGood:          d.lastGood,
		LastFailure:       d.lastFail,
		LastCause:         d.lastCause,
		Counters:          d.counters,
	}
}

// Observe records one probe result at now; cause describes a failure (the
// probe's error) and is ignored on success. It returns the transition the
// result caused, if any.
func (d *Detector) Observe(now time.Time, ok bool, cause string) (Transition, bool) {
	return d.ObserveSent(now, now, ok, cause)
}

// ObserveSent is Observe for a probe sent at sent: a failure streak it
// begins begins then, not when the probe gave up.
func (d *Detector) ObserveSent(sent, now time.Time, ok bool, cause string) (Transition, bool) {
	if !ok {
		d.counters.ProbesFailed++
		return d.miss(sent, now, cause)
	}
	d.counters.ProbesOK++
	d.lastGood = now
	d.misses = 0
	d.firstMiss = time.Time{}
	if d.linkDown {
		// The carrier is down: a success must come from a stale path or
		// a race with the link event, so it does not count toward Rise.
		return Transition{}, false
	}
	d.oks++
	if d.health != Up && d.oks >= d.riseNeeded() {
		d.upAt = now
		return d.change(now, Up, fmt.Sprintf("%d consecutive good probes", d.oks), time.Time{}), true
	}
	return Transition{}, false
}

// Evidence records a failure the datapath saw in a flow (the server reset
// a protected flow, or stopped acknowledging). It counts as one miss, and
// at most one per Interval: a single odd flow, or a burst of them (a server
// closing many connections as it may), must not fail a server that still
// answers probes; a failed server fails its probes too.
func (d *Detector) Evidence(now time.Time, cause string) (Transition, bool) {
	d.counters.Evidence++
	if !d.lastEvidence.IsZero() && now.Sub(d.lastEvidence) < d.cfg.Interval {
		return Transition{}, false
	}
	d.lastEvidence = now
	return d.miss(now, now, cause)
}

// LinkDown records carrier loss on the way to the server. Carrier loss is
// certain, so the server is Down at once.
func (d *Detector) LinkDown(now time.Time, cause string) (Transition, bool) {
	d.counters.LinkDowns++
	d.linkDown = true
	d.oks = 0
	if d.misses == 0 {
		d.firstMiss = now
	}
	d.misses++
	d.lastFail = now
	d.lastCause = cause
	if d.health == Down {
		return Transition{}, false
	}
	return d.change(now, Down, cause, d.firstMiss), true
}

// LinkUp records that the carrier is back. It changes no state: the
// server comes up only after Rise good probes from now on.
func (d *Detector) LinkUp(now time.Time) {
	if d.linkDown {
		d.linkDown = false
		d.oks = 0
	}
}

// Reset forces the state to h and clears both streaks, as when the
// operator fails a server over: Reset(now, Down, cause) fences it, and it
// comes back only after Rise good probes.
func (d *Detector) Reset(now time.Time, h Health, cause string) (Transition, bool) {
	d.misses, d.oks = 0, 0
	d.firstMiss = time.Time{}
	if h == d.health {
		return Transition{}, false
	}
	if h == Down {
		d.lastFail = now
		d.lastCause = cause
	}
	return d.change(now, h, cause, time.Time{}), true
}

func (d *Detector) miss(since, now time.Time, cause string) (Transition, bool) {
	d.oks = 0
	if d.misses == 0 {
		d.firstMiss = since
	}
	d.misses++
	d.lastFail = now
	d.lastCause = cause
	if d.health != Down && d.misses >= d.cfg.Misses {
		d.noteFailure(now)
		return d.change(now, Down, cause, d.firstMiss), true
	}
	return Transition{}, false
}

// noteFailure counts a failure of a server that came up less than
// flapWindow ago as a flap, and forgets the flaps of one that stayed up.
func (d *Detector) noteFailure(now time.Time) {
	if d.health == Up && now.Sub(d.upAt) < flapWindow {
		d.flaps++
	} else {
		d.flaps = 0
	}
}

func (d *Detector) change(now time.Time, to Health, cause string, firstMiss time.Time) Transition {
	t := Transition{
		Server:    d.server,
		Name:      d.name,
		From:      d.health,
		To:        to,
		At:        now,
		Cause:     cause,
		FirstMiss: firstMiss,
		LastGood:  d.lastGood,
	}
	d.health = to
	d.counters.Transitions++
	return t
}
