package testbed

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkCompare is make bench: the host kernel's forwarding, HAProxy in
// TCP mode and understudy, measured side by side in one bed, interleaved
// round by round (DESIGN.md §5). It prints one table with understudy's
// ratios and writes it as markdown and JSON under bench/results/.
// US_BENCH_ROUNDS, US_WRK_SECONDS, US_FAILOVERS and US_FLOWS shorten or
// lengthen it (0 failovers or flows leaves that part out).
//
//	make bench
func BenchmarkCompare(b *testing.B) {
	RequireTool(b, "wrk")
	RequireTool(b, "haproxy")
	cfg := BenchConfig{
		Rounds: envInt("US_BENCH_ROUNDS", 5), BulkFile: "huge.bin",
		WrkRounds:   3,
		WrkDuration: time.Duration(envInt("US_WRK_SECONDS", 10)) * time.Second,
		LatDuration: time.Duration(envInt("US_WRK_SECONDS", 10)) * time.Second,
		Failovers:   envInt("US_FAILOVERS", 21), HAProxyFailovers: min(3, envInt("US_FAILOVERS", 21)), FailoverFile: "huge.bin",
		Flows:         envInt("US_FLOWS", 100000),
		OffloadRounds: envInt("US_BENCH_ROUNDS", 5),
		Progress:      os.Stderr,
	}
	cfg.WrkRounds = min(cfg.WrkRounds, cfg.Rounds)
	// The servers as deployed on two cores: one nginx worker each. RunBench
	// restarts them with room for the idle flows only for that figure.
	bed := Up(b, Options{Huge: true})
	rep, errs := bed.RunBench(cfg)
	for _, err := range errs {
		b.Error(err)
	}
	md := rep.Markdown()
	b.Logf("make bench:\n%s", md)
	os.Stdout.WriteString("\n" + md + "\n")
	path, err := rep.Write(filepath.Join(bed.Root, "bench", "results"))
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("written to %s and .json", path)
}

// TestBenchSmoke runs the bench harness once briefly for each system, so
// make bench does not rot between runs: every figure must come out.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped with -short")
	}
	// Default-sized servers: the flow figure resizes them, as in make bench.
	bed := Up(t, Options{Huge: true})
	RequireTool(t, "wrk")
	RequireTool(t, "haproxy")
	var progress strings.Builder
	cfg := BenchConfig{
		Rounds: 1, BulkFile: "big.bin", WrkRounds: 1, WrkDuration: time.Second, LatDuration: time.Second,
		Failovers: 1, HAProxyFailovers: 1, FailoverFile: "huge.bin", Flows: 2000, OffloadRounds: 1,
		Progress: &progress,
	}
	rep, errs := bed.RunBench(cfg)
	for _, err := range errs {
		t.Error(err)
	}
	t.Logf("\n%s\n%s", rep.Markdown(), progress.String())
	// A line as each system's round ends, after the round with offloads
	// on, and before the failovers and each system's flows.
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	if want := len(Systems) + 1 + 2 + 2; len(lines) != want || !strings.Contains(lines[2], "understudy: bulk download ") ||
		!strings.Contains(lines[2], "bulk download, understudy's backup drained ") {
		t.Errorf("progress: %d lines, want %d, the third understudy's figures:\n%s", len(lines), want, progress.String())
	}
	// Every figure has a number for every system, or a note saying why it
	// has none; understudy's figures all have numbers.
	for _, f := range rep.Figures {
		for _, sys := range Systems {
			v, ok := f.Values[sys]
			switch {
			case !ok:
				t.Errorf("%s: no value for %s", f.Name, sys)
			case math.IsNaN(v) && (sys == Understudy || f.Notes[sys] == ""):
				t.Errorf("%s: %s was not measured", f.Name, sys)
			}
		}
	}
	if _, err := rep.Write(t.TempDir()); err != nil {
		t.Error(err)
	}
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v >= 0 {
		return v
	}
	return def
}
