package testbed

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkFailoverStall measures what a client waits when the primary
// fails in the middle of a 256 MiB download: the longest gap between two
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
	// huge.bin: a 64 MiB download can end before the fault, 400 ms in.
	bed := Up(b, Options{Huge: true})
	res := bed.FailoverStalls(n, "huge.bin")
	for _, err := range res.Errors {
		b.Error(err)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-10s %5s %10s %10s %10s\n", "fault", "n", "p50", "p99", "max")
	for _, f := range Faults {
		s := res.Stalls[f]
		fmt.Fprintf(&table, "%-10s %5d %10v %10v %10v\n", f, len(s), pct(s, 50), pct(s, 99), pct(s, 100))
	}
	all := res.All()
	fmt.Fprintf(&table, "%-10s %5d %10v %10v %10v\n", "all", len(all), pct(all, 50), pct(all, 99), pct(all, 100))
	fmt.Fprintf(&table, "detection (first missed probe to decision): p50 %v p99 %v over %d\n", pct(res.Detected, 50), pct(res.Detected, 99), len(res.Detected))
	b.Logf("client stall at failover, primary failing mid-download, 10ms probes:\n%s", table.String())
	b.ReportMetric(ms(pct(all, 50)), "stall-p50-ms")
	b.ReportMetric(ms(pct(all, 99)), "stall-p99-ms")
	b.ReportMetric(ms(pct(res.Detected, 50)), "detect-p50-ms")
}
