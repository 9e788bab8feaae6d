package failover

import (
	"testing"
	"time"
)

// step is one input to a detector in a scripted test; the clock advances
// by one interval before each step.
type step struct {
	op    string // "ok", "fail", "evidence", "burst", "linkdown", "linkup", "reset-down", "reset-unknown", "idle"
	cause string
	want  Health // health after the step
	tr    bool   // whether the step must report a transition
}

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func TestDetectorScripts(t *testing.T) {
	ok := func(want Health, tr bool) step { return step{op: "ok", want: want, tr: tr} }
	fail := func(want Health, tr bool) step { return step{op: "fail", cause: "probe: refused", want: want, tr: tr} }
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"rise from unknown", Config{}, []step{
			ok(Unknown, false), ok(Unknown, false), ok(Up, true), ok(Up, false), ok(Up, false),
		}},
		{"down from unknown after misses", Config{}, []step{
			fail(Unknown, false), fail(Unknown, false), fail(Down, true), fail(Down, false),
		}},
		{"exactly misses failures", Config{Misses: 3, Rise: 1}, []step{
			ok(Up, true), fail(Up, false), fail(Up, false), fail(Down, true), fail(Down, false),
		}},
		{"a success resets the miss streak", Config{Misses: 3, Rise: 1}, []step{
			ok(Up, true), fail(Up, false), fail(Up, false), ok(Up, false),
			fail(Up, false), fail(Up, false), fail(Down, true),
		}},
		{"a failure resets the rise streak", Config{Misses: 1, Rise: 3}, []step{
			fail(Down, true), ok(Down, false), ok(Down, false), fail(Down, false),
			ok(Down, false), ok(Down, false), ok(Up, true),
		}},
		{"misses of one", Config{Misses: 1, Rise: 1}, []step{
			ok(Up, true), fail(Down, true), ok(Down, false), ok(Up, true), fail(Down, true),
		}},
		{"a flapping server needs twice the good probes per flap", Config{Misses: 1, Rise: 2}, []step{
			ok(Unknown, false), ok(Up, true),
			fail(Down, true), // within the flap window of coming up: 4 now
			ok(Down, false), ok(Down, false), ok(Down, false), ok(Up, true),
			fail(Down, true), // again: 8
			ok(Down, false), ok(Down, false), ok(Down, false), ok(Down, false),
			ok(Down, false), ok(Down, false), ok(Down, false), ok(Up, true),
			{op: "idle", want: Up}, // up past the window: the flaps are forgotten
			fail(Down, true), ok(Down, false), ok(Up, true),
		}},
		{"fences and carrier loss are no flaps", Config{Misses: 3, Rise: 1}, []step{
			ok(Up, true),
			{op: "reset-down", cause: "manual failover", want: Down, tr: true},
			ok(Up, true),
			{op: "linkdown", cause: "carrier lost", want: Down, tr: true},
			{op: "linkup", want: Down},
			ok(Up, true),
		}},
		{"evidence counts as a miss", Config{Misses: 3, Rise: 1}, []step{
			ok(Up, true),
			{op: "evidence", cause: "evidence: primary reset a protected flow", want: Up},
			fail(Up, false),
			{op: "evidence", cause: "evidence: primary reset a protected flow", want: Down, tr: true},
		}},
		{"a burst of evidence is one miss an interval", Config{Misses: 3, Rise: 1}, []step{
			ok(Up, true),
			{op: "burst", cause: "evidence", want: Up},
			{op: "burst", cause: "evidence", want: Up},
			{op: "burst", cause: "evidence", want: Down, tr: true},
		}},
		{"a good probe between bursts", Config{Misses: 3, Rise: 1}, []step{
			ok(Up, true),
			{op: "burst", cause: "evidence", want: Up},
			{op: "burst", cause: "evidence", want: Up},
			ok(Up, false),
			{op: "burst", cause: "evidence", want: Up},
			{op: "burst", cause: "evidence", want: Up},
		}},
		{"evidence streak broken by a good probe", Config{Misses: 2, Rise: 1}, []step{
			ok(Up, true),
			{op: "evidence", cause: "evidence", want: Up},
			ok(Up, false),
			{op: "evidence", cause: "evidence", want: Up},
			{op: "evidence", cause: "evidence", want: Down, tr: true},
		}},
		{"link down is immediate", Config{Misses: 3, Rise: 1}, []step{
			ok(Up, true),
			{op: "linkdown", cause: "carrier lost on srv0", want: Down, tr: true},
			{op: "linkdown", cause: "carrier lost on srv0", want: Down},
			fail(Down, false),
		}},
		{"link down from unknown", Config{}, []step{
			{op: "linkdown", cause: "carrier lost on srv0", want: Down, tr: true},
		}},
		{"no rise while the carrier is down", Config{Misses: 3, Rise: 2}, []step{
			ok(Unknown, false), ok(Up, true),
			{op: "linkdown", cause: "carrier lost", want: Down, tr: true},
			ok(Down, false), ok(Down, false), ok(Down, false),
			{op: "linkup", want: Down},
			ok(Down, false), ok(Up, true),
		}},
		{"link up alone does not raise", Config{Rise: 1}, []step{
			{op: "linkdown", cause: "carrier lost", want: Down, tr: true},
			{op: "linkup", want: Down},
			fail(Down, false), ok(Up, true),
		}},
		{"reset down fences until rise", Config{Misses: 3, Rise: 3}, []step{
			ok(Unknown, false), ok(Unknown, false), ok(Up, true),
			{op: "reset-down", cause: "manual failover", want: Down, tr: true},
			{op: "reset-down", cause: "manual failover", want: Down},
			ok(Down, false), ok(Down, false), ok(Up, true),
		}},
		{"reset to the same state reports nothing", Config{}, []step{
			{op: "reset-unknown", want: Unknown},
		}},
		{"reset clears a partial streak", Config{Misses: 2, Rise: 1}, []step{
			ok(Up, true), fail(Up, false),
			{op: "reset-unknown", want: Unknown, tr: true},
			fail(Unknown, false), fail(Down, true),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg.WithDefaults()
			d := NewDetector(1, "backup", tc.cfg)
			now := t0
			transitions := 0
			for i, s := range tc.steps {
				now = now.Add(cfg.Interval)
				var tr Transition
				var changed bool
				switch s.op {
				case "ok":
					tr, changed = d.Observe(now, true, "")
				case "fail":
					tr, changed = d.Observe(now, false, s.cause)
				case "evidence":
					tr, changed = d.Evidence(now, s.cause)
				case "burst":
					// Ten within a tenth of the interval: one miss. The
					// clock ends where the step's began plus a tenth,
					// which the next step's interval still covers.
					for k := range 10 {
						if tr1, ch := d.Evidence(now.Add(time.Duration(k)*cfg.Interval/100), s.cause); ch {
							tr, changed = tr1, true
						}
					}
				case "linkdown":
					tr, changed = d.LinkDown(now, s.cause)
				case "linkup":
					d.LinkUp(now)
				case "idle":
					now = now.Add(flapWindow)
					tr, changed = d.Observe(now, true, "")
				case "reset-down":
					tr, changed = d.Reset(now, Down, s.cause)
				case "reset-unknown":
					tr, changed = d.Reset(now, Unknown, s.cause)
				default:
					t.Fatalf("bad op %q", s.op)
				}
				if changed != s.tr {
					t.Fatalf("step %d (%s): transition reported %v, want %v (%v)", i, s.op, changed, s.tr, tr)
				}
				if got := d.Health(); got != s.want {
					t.Fatalf("step %d (%s): health %v, want %v", i, s.op, got, s.want)
				}
				if changed {
					transitions++
					if tr.To != s.want || tr.At != now || tr.Server != 1 || tr.Name != "backup" {
						t.Fatalf("step %d (%s): transition %+v", i, s.op, tr)
					}
					if tr.From == tr.To {
						t.Fatalf("step %d (%s): transition to the same state %v", i, s.op, tr.To)
					}
					if s.cause != "" && tr.Cause != s.cause {
						t.Fatalf("step %d (%s): cause %q, want %q", i, s.op, tr.Cause, s.cause)
					}
				}
			}
			if got := d.Status().Transitions; got != uint64(transitions) {
				t.Fatalf("Transitions counter %d, want %d", got, transitions)
			}
		})
	}
}

func TestDetectorDownTimes(t *testing.T) {
	cfg := Config{Interval: 10 * time.Millisecond, Misses: 3, Rise: 1}
	d := NewDetector(0, "primary", cfg)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	d.Observe(at(0), true, "")
	d.Observe(at(10), true, "")
	d.Observe(at(20), false, "probe a: connect: connection refused")
	d.Observe(at(30), false, "probe b: connect: connection refused")
	tr, changed := d.Observe(at(40), false, "probe c: connect: connection refused")
	if !changed {
		t.Fatal("no transition after 3 misses")
	}
	if tr.From != Up || tr.To != Down || !tr.FirstMiss.Equal(at(20)) || !tr.LastGood.Equal(at(10)) || !tr.At.Equal(at(40)) {
		t.Fatalf("transition %+v", tr)
	}
	if tr.Cause != "probe c: connect: connection refused" {
		t.Fatalf("cause %q, want the last failure's", tr.Cause)
	}
	if got := tr.DetectionLatency(); got != 20*time.Millisecond {
		t.Fatalf("DetectionLatency %v, want 20ms", got)
	}
	st := d.Status()
	want := Counters{ProbesOK: 2, ProbesFailed: 3, Transitions: 2}
	if st.Counters != want || st.ConsecutiveMisses != 3 || st.ConsecutiveOK != 0 || st.LastCause != tr.Cause {
		t.Fatalf("status %+v", st)
	}

	// Down 40 ms after it came up: a flap, so Rise (1) doubles.
	if _, changed := d.Observe(at(45), true, ""); changed || d.Status().RiseNeeded != 2 {
		t.Fatalf("one good probe after a flap: changed %v, rise needed %d; want no change, 2", changed, d.Status().RiseNeeded)
	}
	tr, changed = d.Observe(at(50), true, "")
	if !changed || tr.From != Down || tr.To != Up || !tr.FirstMiss.IsZero() || tr.DetectionLatency() != 0 {
		t.Fatalf("up transition %+v changed=%v", tr, changed)
	}

	tr, changed = d.LinkDown(at(60), "carrier lost on srv0")
	if !changed || !tr.FirstMiss.Equal(at(60)) || tr.DetectionLatency() != 0 || !tr.LastGood.Equal(at(50)) {
		t.Fatalf("link down transition %+v changed=%v", tr, changed)
	}
	if st := d.Status(); !st.LinkDown || st.LinkDowns != 1 {
		t.Fatalf("status after link down %+v", st)
	}
}

func TestConfigDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	want := Config{Interval: 10 * time.Millisecond, Misses: 3, Rise: 3, Timeout: 10 * time.Millisecond}
	if got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
	if got := (Config{Interval: time.Second}).WithDefaults(); got.Timeout != time.Second {
		t.Fatalf("timeout defaults to %v, want the interval", got.Timeout)
	}
	keep := Config{Interval: time.Second, Misses: 5, Rise: 2, Timeout: 3 * time.Second}
	if got := keep.WithDefaults(); got != keep {
		t.Fatalf("WithDefaults changed set fields: %+v", got)
	}
}

func TestHealthTextRoundTrip(t *testing.T) {
	for _, h := range []Health{Unknown, Up, Down} {
		b, _ := h.MarshalText()
		var back Health
		if err := back.UnmarshalText(b); err != nil || back != h {
			t.Errorf("%v: %v %v", h, back, err)
		}
	}
	var h Health
	if err := h.UnmarshalText([]byte("sideways")); err == nil {
		t.Error("accepted an unknown word")
	}
	for k := NoAction; k <= Activate; k++ {
		b, _ := k.MarshalText()
		var back ActionKind
		if err := back.UnmarshalText(b); err != nil || back != k {
			t.Errorf("%v: %v %v", k, back, err)
		}
	}
}

// TestDetectorDownTimesFromSending: a failure streak of probes that time out
// begins when its first probe was sent, so the detection latency includes
// that probe's timeout.
func TestDetectorDownTimesFromSending(t *testing.T) {
	d := NewDetector(0, "primary", Config{Interval: 10 * time.Millisecond, Misses: 3, Rise: 1})
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	d.ObserveSent(at(0), at(1), true, "")
	var tr Transition
	for _, sent := range []int{10, 20, 30} {
		// Each probe times out after 10 ms.
		tr, _ = d.ObserveSent(at(sent), at(sent+10), false, "probe: timeout")
	}
	if tr.To != Down || !tr.FirstMiss.Equal(at(10)) || !tr.At.Equal(at(40)) || tr.DetectionLatency() != 30*time.Millisecond {
		t.Fatalf("transition %+v, latency %v; want down at 40 ms, first miss at 10 ms (sent), 30 ms", tr, tr.DetectionLatency())
	}
}
