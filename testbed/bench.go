package testbed

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BenchConfig sizes one side-by-side run of Systems (make bench).
type BenchConfig struct {
	Rounds      int           // rounds; each starts every system in turn and downloads BulkFile once
	BulkFile    string        // e.g. "huge.bin" (256 MiB, Options.Huge)
	WrkRounds   int           // of the rounds, how many also run wrk
	WrkDuration time.Duration // wrk, 64 keep-alive connections, 1 KiB file
	LatDuration time.Duration // wrk, one connection, --latency
	// Failovers is how many times understudy's primary fails mid-download
	// (faults in turn: host loss, crash, hang); HAProxyFailovers the same
	// for HAProxy, to report what its client gets instead.
	Failovers, HAProxyFailovers int
	FailoverFile                string
	Flows                       int // idle established flows for the memory figure
	// OffloadRounds, after the main rounds, download BulkFile once per
	// system with TSO/GSO on along the whole path, understudy passing
	// super-frames whole (--keep-offloads).
	OffloadRounds int
	GatewayArgs   []string
	// Progress, if set, gets a line after each system's round and before
	// the failovers and each system's idle flows: a full run takes minutes.
	Progress io.Writer `json:"-"`
}

// Figure is one row of the table: a value per system (NaN: not applicable).
type Figure struct {
	Name         string             `json:"name"`
	Unit         string             `json:"unit"`
	HigherBetter bool               `json:"higher_better"`
	Values       map[System]float64 `json:"-"`
	Notes        map[System]string  `json:"notes,omitempty"`
	// Samples are the runs behind each value, in order.
	Samples map[System][]float64 `json:"samples,omitempty"`
}

// MarshalJSON writes NaN as null.
func (f Figure) MarshalJSON() ([]byte, error) {
	type plain Figure
	vals := map[System]*float64{}
	for s, v := range f.Values {
		if !math.IsNaN(v) {
			vals[s] = &v
		} else {
			vals[s] = nil
		}
	}
	vsK, vsH := f.ratio(Kernel), f.ratio(HAProxy)
	return json.Marshal(struct {
		plain
		Values    map[System]*float64 `json:"values"`
		VsKernel  *float64            `json:"understudy_vs_kernel"`
		VsHAProxy *float64            `json:"understudy_vs_haproxy"`
	}{plain: plain(f), Values: vals, VsKernel: nanNil(vsK), VsHAProxy: nanNil(vsH)})
}

func nanNil(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// ratio is understudy's value over ref's.
func (f Figure) ratio(ref System) float64 {
	u, ok1 := f.Values[Understudy]
	r, ok2 := f.Values[ref]
	if !ok1 || !ok2 || r == 0 {
		return math.NaN()
	}
	return u / r
}

// BenchReport is what make bench prints and writes.
type BenchReport struct {
	Date    time.Time   `json:"date"`
	Machine string      `json:"machine"`
	Config  BenchConfig `json:"config"`
	Figures []*Figure   `json:"figures"`
	Notes   []string    `json:"notes"`
}

func newFigure(name, unit string, higher bool) *Figure {
	return &Figure{Name: name, Unit: unit, HigherBetter: higher, Values: map[System]float64{},
		Notes: map[System]string{}, Samples: map[System][]float64{}}
}

func (f *Figure) add(s System, v float64) { f.Samples[s] = append(f.Samples[s], v) }

// settle sets each system's value to the median of its samples, NaN when
// there are none.
func (f *Figure) settle() {
	for _, s := range Systems {
		if v, ok := f.Values[s]; ok && !math.IsNaN(v) {
			continue
		}
		f.Values[s] = median(f.Samples[s])
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// RunBench measures every system in the same bed, interleaved round by
// round, and returns the table. Failures to measure are notes in the report
// and errors for the caller.
func (b *Bed) RunBench(cfg BenchConfig) (*BenchReport, []error) {
	rep := &BenchReport{Date: time.Now().UTC(), Machine: machine(), Config: cfg}
	start := time.Now()
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "bench %v: "+format+"\n", append([]any{time.Since(start).Round(time.Second)}, args...)...)
		}
	}
	var errs []error
	fail := func(format string, args ...any) {
		err := fmt.Errorf(format, args...)
		errs = append(errs, err)
		rep.Notes = append(rep.Notes, "error: "+err.Error())
		progress("error: %v", err)
	}
	bulk := newFigure("bulk download ("+cfg.BulkFile+", curl, median)", "MB/s", true)
	rate := newFigure("request rate (wrk, 64 conns, 1 KiB)", "req/s", true)
	p50 := newFigure("latency p50 (wrk, 1 conn)", "µs", false)
	p99 := newFigure("latency p99 (wrk, 1 conn)", "µs", false)
	cpu := newFigure("gateway CPU per GiB (bulk)", "s/GiB", false)
	mcpu := newFigure("machine CPU per GiB (bulk, all processes)", "s/GiB", false)
	// What the backup has yet to serve when wrk stops: the lead bound keeps
	// it small; a backup far behind would flatter the request rate.
	backlog := newFigure("backup's backlog as wrk ends", "requests", false)
	for _, sys := range []System{Kernel, HAProxy} {
		backlog.Values[sys] = math.NaN()
		backlog.Notes[sys] = "one server serves"
	}
	// The same figures with understudy's backup drained, so that one
	// server serves as for the references: what the gateway itself costs,
	// apart from the second server's work on the same cores.
	bulkSolo := newFigure("bulk download, understudy's backup drained (unprotected)", "MB/s", true)
	rateSolo := newFigure("request rate, understudy's backup drained (unprotected)", "req/s", true)
	p50Solo := newFigure("latency p50, understudy's backup drained (unprotected)", "µs", false)
	want := b.SHA256(cfg.BulkFile)

	cpuUsed := map[System]time.Duration{}
	mcpuUsed := map[System]time.Duration{}
	moved := map[System]int64{}
	shown := []*Figure{bulk, rate, p50, bulkSolo, rateSolo, p50Solo}
	for round := 0; round < cfg.Rounds; round++ {
		for _, sys := range Systems {
			had := sampleCounts(sys, shown)
			srv, err := b.Serve(sys, cfg.GatewayArgs...)
			if err != nil {
				fail("round %d: %v", round, err)
				continue
			}
			c0, _ := procCPU(srv.Pid())
			m0, _ := MachineCPU()
			tr, err := b.benchBulk(cfg.BulkFile, want)
			c1, _ := procCPU(srv.Pid())
			m1, _ := MachineCPU()
			if err != nil {
				fail("round %d: %s: %v", round, sys, err)
			} else {
				bulk.add(sys, tr.mbps())
				cpuUsed[sys] += c1 - c0
				mcpuUsed[sys] += m1 - m0
				moved[sys] += tr.Bytes
			}
			if round < cfg.WrkRounds {
				var ahead0 int // the primary's logged requests less the backup's
				if sys == Understudy {
					ahead0 = b.RequestsLogged(Pri) - b.RequestsLogged(Bak)
				}
				rps, err := b.benchRate(cfg.WrkDuration)
				if sys == Understudy {
					backlog.add(sys, float64(b.RequestsLogged(Pri)-b.RequestsLogged(Bak)-ahead0))
				}
				if err != nil {
					fail("round %d: %s: %v", round, sys, err)
				} else {
					rate.add(sys, rps)
				}
				if l50, l99, err := b.benchLatency(cfg.LatDuration); err != nil {
					fail("round %d: %s: %v", round, sys, err)
				} else {
					p50.add(sys, l50)
					p99.add(sys, l99)
				}
			}
			if sys == Understudy {
				b.benchSolo(cfg, round, want, bulkSolo, rateSolo, p50Solo, fail)
			}
			if err := srv.Stop(); err != nil {
				fail("round %d: stopping %s: %v", round, sys, err)
			}
			progress("round %d/%d, %s: %s", round+1, cfg.Rounds, sys, newSamples(sys, shown, had))
		}
	}
	for _, f := range [][2]*Figure{{bulkSolo, bulk}, {rateSolo, rate}, {p50Solo, p50}} {
		for _, sys := range []System{Kernel, HAProxy} {
			f[0].Samples[sys] = f[1].Samples[sys]
			f[0].Notes[sys] = "as above"
		}
	}
	for _, sys := range Systems {
		gib := float64(moved[sys]) / (1 << 30)
		if gib > 0 {
			mcpu.Values[sys] = mcpuUsed[sys].Seconds() / gib
			if sys == Kernel {
				cpu.Values[sys] = math.NaN()
				cpu.Notes[sys] = "softirq, not a process"
			} else {
				cpu.Values[sys] = cpuUsed[sys].Seconds() / gib
			}
		}
	}
	figs := []*Figure{bulk, rate, backlog, p50, p99, cpu, mcpu, bulkSolo, rateSolo, p50Solo}
	if cfg.OffloadRounds > 0 {
		figs = append(figs, b.benchOffloads(cfg, want, progress, fail))
	}

	stall50 := newFigure("failover client stall p50", "ms", false)
	stall99 := newFigure("failover client stall p99", "ms", false)
	if cfg.Failovers > 0 {
		progress("understudy: failovers mid-download: %d", cfg.Failovers)
		fs := b.FailoverStalls(cfg.Failovers, cfg.FailoverFile, cfg.GatewayArgs...)
		for _, e := range fs.Errors {
			fail("failover: %v", e)
		}
		stall50.Values[Understudy] = ms(pct(fs.All(), 50))
		stall99.Values[Understudy] = ms(pct(fs.All(), 99))
		stall50.Notes[Understudy] = fmt.Sprintf("n=%d, detection p50 %v", len(fs.All()), pct(fs.Detected, 50).Round(100*time.Microsecond))
		stall50.Values[Kernel] = math.NaN()
		stall50.Notes[Kernel] = "no backup"
		stall99.Values[Kernel] = math.NaN()
		stall99.Notes[Kernel] = "no backup"
	}
	if cfg.HAProxyFailovers > 0 {
		progress("haproxy: failovers mid-download: %d", cfg.HAProxyFailovers)
		outcome := b.haproxyFailovers(cfg.HAProxyFailovers, cfg.FailoverFile)
		stall50.Values[HAProxy] = math.NaN()
		stall99.Values[HAProxy] = math.NaN()
		stall50.Notes[HAProxy] = outcome
		stall99.Notes[HAProxy] = "see p50"
	}
	figs = append(figs, stall50, stall99)

	if cfg.Flows > 0 {
		// Room for the idle flows beside the bed's own connections.
		if need := cfg.Flows + 4096; need > max(b.opts.MaxConns, defaultMaxConns) {
			if err := b.Resize(need); err != nil {
				fail("%v", err)
			}
		}
		idle := newFigure("gateway RSS, no flows", "MiB", false)
		held := newFigure(fmt.Sprintf("gateway RSS, %d idle flows", cfg.Flows), "MiB", false)
		per := newFigure("gateway memory per idle flow", "bytes", false)
		for _, sys := range Systems {
			if sys == Kernel {
				for _, f := range []*Figure{idle, held, per} {
					f.Values[sys] = math.NaN()
					f.Notes[sys] = "conntrack, not a process"
				}
				continue
			}
			want := cfg.Flows
			if sys == HAProxy {
				want = min(want, HAProxyMaxConn-500)
			}
			progress("%s: memory with idle flows: %d", sys, want)
			r0, r1, n, err := b.flowMemory(sys, want, cfg.GatewayArgs)
			if err != nil {
				fail("%s: %d flows: %v", sys, cfg.Flows, err)
			}
			if n > 0 {
				idle.Values[sys] = float64(r0) / (1 << 20)
				held.Values[sys] = float64(r1) / (1 << 20)
				per.Values[sys] = float64(r1-r0) / float64(n)
				if n != cfg.Flows {
					held.Notes[sys] = fmt.Sprintf("at %d flows", n)
				}
			}
		}
		figs = append(figs, idle, held, per)
	}
	for _, f := range figs {
		f.settle()
	}
	rep.Figures = figs
	return rep, errs
}

// sampleCounts is how many samples sys has of each figure.
func sampleCounts(sys System, figs []*Figure) []int {
	n := make([]int, len(figs))
	for i, f := range figs {
		n[i] = len(f.Samples[sys])
	}
	return n
}

// newSamples describes the samples sys gained since sampleCounts gave had.
func newSamples(sys System, figs []*Figure, had []int) string {
	var parts []string
	for i, f := range figs {
		for _, v := range f.Samples[sys][had[i]:] {
			name, _, _ := strings.Cut(f.Name, " (")
			parts = append(parts, fmt.Sprintf("%s %s %s", name, formatValue(v), f.Unit))
		}
	}
	if len(parts) == 0 {
		return "nothing measured"
	}
	return strings.Join(parts, "; ")
}

// benchOffloads measures bulk downloads with the bed's offloads on, the
// systems interleaved round by round, and turns them off again.
func (b *Bed) benchOffloads(cfg BenchConfig, want string, progress, fail func(string, ...any)) *Figure {
	bulk := newFigure("bulk download, offloads on ("+cfg.BulkFile+", curl to /dev/null, median)", "MB/s", true)
	size := fileSize(filepath.Join(b.WWW(), cfg.BulkFile))
	if err := b.SetOffloads(true); err != nil {
		fail("%v", err)
		return bulk
	}
	defer func() {
		if err := b.SetOffloads(false); err != nil {
			fail("%v", err)
		}
	}()
	args := append([]string{"--keep-offloads"}, cfg.GatewayArgs...)
	for round := 0; round < cfg.OffloadRounds; round++ {
		var got []string
		for _, sys := range Systems {
			srv, err := b.Serve(sys, args...)
			if err != nil {
				fail("offloads on, round %d: %v", round, err)
				continue
			}
			// The bytes are checked by a hashed download first; the timed
			// ones are counted only: with offloads on every system
			// forwards faster than the harness hashes (about 300 MB/s).
			if round == 0 {
				if _, err := b.benchBulk(cfg.BulkFile, want); err != nil {
					fail("offloads on: %s: %v", sys, err)
				}
			}
			if tr, err := b.benchBulkUnhashed(cfg.BulkFile, size); err != nil {
				fail("offloads on, round %d: %s: %v", round, sys, err)
			} else {
				bulk.add(sys, tr.mbps())
				got = append(got, fmt.Sprintf("%s %s MB/s", sys, formatValue(tr.mbps())))
			}
			if err := srv.Stop(); err != nil {
				fail("offloads on, round %d: stopping %s: %v", round, sys, err)
			}
		}
		progress("offloads on, round %d/%d: %s", round+1, cfg.OffloadRounds, strings.Join(got, ", "))
	}
	return bulk
}

// benchBulkUnhashed downloads file once through the VIP to /dev/null in
// the client; a download that failed or was not size bytes is an error.
func (b *Bed) benchBulkUnhashed(file string, size int64) (*Transfer, error) {
	tr, err := b.DownloadDiscard("/"+file, "--max-time", "300")
	switch {
	case err != nil:
		return nil, fmt.Errorf("bulk: %w", err)
	case tr.Bytes != size:
		return nil, fmt.Errorf("bulk: %d bytes, want %d", tr.Bytes, size)
	}
	return tr, nil
}

// benchSolo drains understudy's backup and measures a download and, in
// wrk rounds, the request rate and latency with the primary serving alone.
func (b *Bed) benchSolo(cfg BenchConfig, round int, want string, bulk, rate, p50 *Figure, fail func(string, ...any)) {
	if out, err := b.Understudy("drain", "backup"); err != nil {
		fail("round %d: drain backup: %v: %s", round, err, out)
		return
	}
	served := b.RequestsLogged(Bak)
	defer func() {
		if n := b.RequestsLogged(Bak) - served; n != 0 {
			fail("round %d: the drained backup served %d requests", round, n)
		}
	}()
	if tr, err := b.benchBulk(cfg.BulkFile, want); err != nil {
		fail("round %d: backup drained: %v", round, err)
	} else {
		bulk.add(Understudy, tr.mbps())
	}
	if round >= cfg.WrkRounds {
		return
	}
	if rps, err := b.benchRate(cfg.WrkDuration); err != nil {
		fail("round %d: backup drained: %v", round, err)
	} else {
		rate.add(Understudy, rps)
	}
	if l50, _, err := b.benchLatency(cfg.LatDuration); err != nil {
		fail("round %d: backup drained: %v", round, err)
	} else {
		p50.add(Understudy, l50)
	}
}

// benchBulk downloads file once through the VIP; a download that failed or
// whose bytes are not want's is an error.
func (b *Bed) benchBulk(file, want string) (*Transfer, error) {
	tr, err := b.Download("/"+file, "--max-time", "300")
	switch {
	case err != nil:
		return nil, fmt.Errorf("bulk: %w", err)
	case tr.SHA256 != want:
		return nil, fmt.Errorf("bulk: sha256 %s, want %s", tr.SHA256, want)
	}
	return tr, nil
}

// mbps is the transfer's rate in MB/s.
func (tr *Transfer) mbps() float64 { return float64(tr.Bytes) / tr.TimeTotal.Seconds() / 1e6 }

// benchRate runs wrk with 64 keep-alive connections on the 1 KiB file for d
// and returns its request rate; a socket error or a non-2xx answer is an
// error.
func (b *Bed) benchRate(d time.Duration) (float64, error) {
	w, err := b.Wrk(64, d, "/1k.bin")
	switch {
	case err != nil:
		return 0, fmt.Errorf("wrk: %w", err)
	case w.SocketErrors.Total() > 0 || w.Non2xx > 0:
		return 0, fmt.Errorf("wrk: %d socket errors, %d non-2xx", w.SocketErrors.Total(), w.Non2xx)
	}
	return w.RequestsPerS, nil
}

// benchLatency runs wrk on one connection with --latency for d and returns
// its p50 and p99 in µs.
func (b *Bed) benchLatency(d time.Duration) (p50, p99 float64, err error) {
	w, err := b.Wrk(1, d, "/1k.bin", "--latency")
	if err != nil {
		return 0, 0, fmt.Errorf("wrk latency: %w", err)
	}
	l50, l99, err := wrkLatency(w.Output)
	if err != nil {
		return 0, 0, err
	}
	return float64(l50.Nanoseconds()) / 1e3, float64(l99.Nanoseconds()) / 1e3, nil
}

// procCPU is CPUTime, zero for the kernel (pid 0).
func procCPU(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	return CPUTime(pid)
}

var wrkPct = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)

// wrkLatency reads the 50th and 99th percentiles of wrk --latency.
func wrkLatency(out string) (p50, p99 time.Duration, err error) {
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		d, perr := time.ParseDuration(m[2] + m[3])
		if perr != nil {
			return 0, 0, fmt.Errorf("wrk latency %q: %w", m[0], perr)
		}
		if m[1] == "50" {
			p50 = d
		} else {
			p99 = d
		}
	}
	if p50 == 0 || p99 == 0 {
		return 0, 0, fmt.Errorf("wrk: no latency distribution in output:\n%s", out)
	}
	return p50, p99, nil
}

// FailoverResult is the client's stall over several failovers.
type FailoverResult struct {
	Stalls   map[Fault][]time.Duration
	Detected []time.Duration // first missed probe to decision
	Errors   []error
}

// All is every fault's stalls.
func (r *FailoverResult) All() []time.Duration {
	var all []time.Duration
	for _, f := range Faults {
		all = append(all, r.Stalls[f]...)
	}
	return all
}

// FailoverStalls fails the primary n times (host loss, crash and hang in
// turn) 400ms into a download of file through understudy, with 10ms HTTP
// probes, and measures the longest gap between segments reaching the
// client, from its own capture. A download that fails or comes out wrong is
// an error, not a stall.
func (b *Bed) FailoverStalls(n int, file string, gatewayArgs ...string) *FailoverResult {
	want := b.SHA256(file)
	size := fileSize(filepath.Join(b.WWW(), file))
	args := append([]string{"--probe-interval", "10ms", "--probe-misses", "3", "--probe-rise", "3", "--probe-http", "/index.html"}, gatewayArgs...)
	res := &FailoverResult{Stalls: map[Fault][]time.Duration{}}
	for i := 0; i < n; i++ {
		fault := Faults[i%len(Faults)]
		gw := b.StartGateway(args...)
		capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)
		run := b.Background(func() (*Transfer, error) { return b.Download("/"+file, "--max-time", "60") })
		time.Sleep(400 * time.Millisecond)
		early := run.Done()
		in := b.Inject(fault, Pri)
		tr, err := run.Wait()
		pkts := capture.Stop()
		v := pkts.ClientView(time.Time{}, size)
		if st, serr := b.Status(); serr == nil {
			if lf := LastFailover(st); lf != nil {
				if ms, ok := lf["detected_ms"].(float64); ok {
					res.Detected = append(res.Detected, time.Duration(ms*float64(time.Millisecond)))
				}
			}
		}
		gw.Stop()
		in.Repair()
		switch {
		case early:
			res.Errors = append(res.Errors, fmt.Errorf("%s #%d: the download ended before the fault", fault, i))
			continue
		case err != nil:
			res.Errors = append(res.Errors, fmt.Errorf("%s #%d: download failed: %v", fault, i, err))
			continue
		case tr.SHA256 != want || tr.NumConnects != 1:
			res.Errors = append(res.Errors, fmt.Errorf("%s #%d: sha256 %s over %d connections, want %s over 1", fault, i, tr.SHA256, tr.NumConnects, want))
			continue
		}
		for _, p := range v.Problems() {
			res.Errors = append(res.Errors, fmt.Errorf("%s #%d: the client saw %s", fault, i, p))
		}
		if capture.Dropped > 0 {
			// A packet missing from the capture reads as a gap.
			res.Errors = append(res.Errors, fmt.Errorf("%s #%d: stall not measured: the client's capture dropped %d packets", fault, i, capture.Dropped))
			continue
		}
		res.Stalls[fault] = append(res.Stalls[fault], v.Stall.Gap)
	}
	return res
}

// haproxyFailovers fails HAProxy's primary n times mid-download and says
// what the client got.
func (b *Bed) haproxyFailovers(n int, file string) string {
	want := b.SHA256(file)
	outcomes := map[string]int{}
	for i := 0; i < n; i++ {
		fault := Faults[i%len(Faults)]
		srv, err := b.Serve(HAProxy)
		if err != nil {
			outcomes["start failed: "+err.Error()]++
			continue
		}
		run := b.Background(func() (*Transfer, error) { return b.Download("/"+file, "--max-time", "20") })
		time.Sleep(400 * time.Millisecond)
		in := b.Inject(fault, Pri)
		tr, err := run.Wait()
		srv.Stop()
		in.Repair()
		switch {
		case err == nil && tr.SHA256 == want:
			outcomes["intact"]++
		case err == nil:
			outcomes["corrupt body"]++
		default:
			msg := tr.Stderr
			if i := strings.Index(msg, "curl: ("); i >= 0 {
				msg = msg[i:]
			}
			// "curl: (18) transfer closed with 123 bytes remaining": the
			// number differs run by run.
			msg = regexp.MustCompile(`\d{3,}`).ReplaceAllString(msg, "N")
			outcomes[fault.String()+": "+strings.TrimSpace(msg)]++
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(outcomes)) {
		parts = append(parts, fmt.Sprintf("%d× %s", outcomes[k], k))
	}
	return strings.Join(parts, "; ")
}

// flowMemory serves the VIP with sys, reads the gateway's RSS, opens n idle
// connections, reads it again, and resets them.
func (b *Bed) flowMemory(sys System, n int, gatewayArgs []string) (before, after int64, held int, err error) {
	srv, err := b.Serve(sys, gatewayArgs...)
	if err != nil {
		return 0, 0, 0, err
	}
	defer srv.Stop()
	pid := srv.Pid()
	if pid != 0 {
		if before, err = RSS(pid); err != nil {
			return 0, 0, 0, err
		}
	}
	h, herr := b.HoldConnections(n, 3*time.Minute)
	if h == nil {
		return before, 0, 0, herr
	}
	defer h.Close()
	// Let the last handshakes' segments settle.
	time.Sleep(500 * time.Millisecond)
	if pid != 0 {
		if after, err = RSS(pid); err != nil {
			return before, 0, h.Len(), err
		}
	}
	return before, after, h.Len(), herr
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// machine describes the host: CPU model, cores, kernel.
func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel := "?"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%s, %d cores, Linux %s", model, runtime.NumCPU(), kernel)
}

// Markdown is the report as a table with understudy's ratios.
func (r *BenchReport) Markdown() string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s — %s\n\n", r.Date.Format("2006-01-02 15:04 UTC"), r.Machine)
	s.WriteString("| figure | kernel | HAProxy | understudy | understudy / kernel | understudy / HAProxy |\n")
	s.WriteString("| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, f := range r.Figures {
		cell := func(sys System) string {
			v := f.Values[sys]
			out := "—"
			if !math.IsNaN(v) {
				out = formatValue(v)
			}
			if n := f.Notes[sys]; n != "" {
				if out == "—" {
					out = n
				} else {
					out += " (" + n + ")"
				}
			}
			return out
		}
		ratio := func(ref System) string {
			v := f.ratio(ref)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return "—"
			}
			return strconv.FormatFloat(v, 'f', 2, 64) + "×"
		}
		fmt.Fprintf(&s, "| %s, %s | %s | %s | %s | %s | %s |\n", f.Name, f.Unit,
			cell(Kernel), cell(HAProxy), cell(Understudy), ratio(Kernel), ratio(HAProxy))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&s, "\n- %s", n)
	}
	if len(r.Notes) > 0 {
		s.WriteString("\n")
	}
	return s.String()
}

func formatValue(v float64) string {
	switch {
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// Write puts the report under dir as bench-<time>.md and .json.
func (r *BenchReport) Write(dir string) (mdPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base := filepath.Join(dir, "bench-"+r.Date.Format("20060102-150405"))
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".json", append(js, '\n'), 0o644); err != nil {
		return "", err
	}
	return base + ".md", os.WriteFile(base+".md", []byte(r.Markdown()), 0o644)
}

// pct returns the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
