package testbed

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkFailoverStall measures what a client waits when the primary
// fails in the middle of a 64 MiB download: the longest gap between two
// segments reaching it, from its own capture, over US_FAILOVERS failovers
// (default 21: seven each of host loss, crash and hang), with a 10ms probe
// interval. It reports medians and 99th percentiles; it asserts only that
// every download completed intact on its one connection with no reset.
//
//	make bench-failover
func BenchmarkFailoverStall(b *testing.B) {
	n := 21
	if v, err := strconv.Atoi(os.Getenv("US_FAILOVERS")); err == nil && v > 0 {
		n = v
	}
	bed := Up(b, Options{})
	want := bed.SHA256("big.bin")
	args := []string{"--probe-interval", "10ms", "--probe-misses", "3", "--probe-rise", "3", "--probe-http", "/index.html"}
	stalls := map[Fault][]time.Duration{}
	var detected []time.Duration
	for i := 0; i < n; i++ {
		fault := Faults[i%len(Faults)]
		gw := bed.StartGateway(args...)
		capture := bed.StartTcpdump(bed.Client(), "eth0", "tcp and host "+VIP)
		run := bed.Background(func() (*Transfer, error) { return bed.Download("/big.bin", "--max-time", "20") })
		time.Sleep(400 * time.Millisecond)
		in := bed.Inject(fault, Pri)
		tr, err := run.Wait()
		v := capture.Stop().ClientView(time.Time{}, 64<<20)
		if st, serr := bed.Status(); serr == nil {
			if lf := LastFailover(st); lf != nil {
				if ms, ok := lf["detected_ms"].(float64); ok {
					detected = append(detected, time.Duration(ms*float64(time.Millisecond)))
				}
			}
		}
		gw.Stop()
		in.Repair()
		switch {
		case err != nil:
			b.Errorf("%s #%d: download failed: %v", fault, i, err)
			continue
		case tr.SHA256 != want || tr.NumConnects != 1:
			b.Errorf("%s #%d: sha256 %s over %d connections, want %s over 1", fault, i, tr.SHA256, tr.NumConnects, want)
			continue
		}
		for _, p := range v.Problems() {
			b.Errorf("%s #%d: the client saw %s", fault, i, p)
		}
		stalls[fault] = append(stalls[fault], v.Stall.Gap)
	}
	var all []time.Duration
	var table strings.Builder
	fmt.Fprintf(&table, "%-10s %5s %10s %10s %10s\n", "fault", "n", "p50", "p99", "max")
	for _, f := range Faults {
		s := stalls[f]
		all = append(all, s...)
		fmt.Fprintf(&table, "%-10s %5d %10v %10v %10v\n", f, len(s), pct(s, 50), pct(s, 99), pct(s, 100))
	}
	fmt.Fprintf(&table, "%-10s %5d %10v %10v %10v\n", "all", len(all), pct(all, 50), pct(all, 99), pct(all, 100))
	fmt.Fprintf(&table, "detection (first missed probe to decision): p50 %v p99 %v over %d\n", pct(detected, 50), pct(detected, 99), len(detected))
	b.Logf("client stall at failover, primary failing mid-download, 10ms probes:\n%s", table.String())
	b.ReportMetric(ms(pct(all, 50)), "stall-p50-ms")
	b.ReportMetric(ms(pct(all, 99)), "stall-p99-ms")
	b.ReportMetric(ms(pct(detected, 50)), "detect-p50-ms")
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
