package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const tracefs = "/sys/kernel/tracing"

// DropWatch counts the kernel's packet drops with chosen reasons through the
// skb:kfree_skb tracepoint. Some drops have no nstat counter — an ACK of data
// never sent (TCP_ACK_UNSENT_DATA) is the one a gateway must never cause — so
// the tracepoint is the only witness. It is host-wide: tests hold it only
// while their own traffic runs.
type DropWatch struct {
	t       testing.TB
	reasons map[int]string
}

// WatchDrops starts counting kfree_skb events whose reason is one of names
// (the kernel's enum skb_drop_reason without the SKB_DROP_REASON_ prefix).
func WatchDrops(t testing.TB, names ...string) *DropWatch {
	t.Helper()
	if _, err := os.Stat(filepath.Join(tracefs, "events")); err != nil {
		if out, err := runHost("mount", "-t", "tracefs", "nodev", tracefs); err != nil {
			t.Fatalf("mount tracefs to watch kernel drops: %v: %s", err, out)
		}
	}
	ev := filepath.Join(tracefs, "events/skb/kfree_skb")
	format, err := os.ReadFile(filepath.Join(ev, "format"))
	if err != nil {
		t.Fatalf("read kfree_skb tracepoint format: %v", err)
	}
	codes := dropReasonCodes(string(format))
	w := &DropWatch{t: t, reasons: map[int]string{}}
	var clauses []string
	for _, n := range names {
		c, ok := codes[n]
		if !ok {
			t.Fatalf("this kernel has no drop reason %s", n)
		}
		w.reasons[c] = n
		clauses = append(clauses, fmt.Sprintf("reason == %d", c))
	}
	w.write("events/skb/kfree_skb/filter", strings.Join(clauses, " || "))
	w.write("trace", "")
	w.write("events/skb/kfree_skb/enable", "1")
	t.Cleanup(w.disable)
	return w
}

func (w *DropWatch) write(file, val string) {
	w.t.Helper()
	if err := os.WriteFile(filepath.Join(tracefs, file), []byte(val), 0o644); err != nil {
		w.t.Fatalf("tracefs %s: %v", file, err)
	}
}

func (w *DropWatch) disable() {
	os.WriteFile(filepath.Join(tracefs, "events/skb/kfree_skb/enable"), []byte("0"), 0o644)
	os.WriteFile(filepath.Join(tracefs, "events/skb/kfree_skb/filter"), []byte("0"), 0o644)
}

// Counts stops watching and returns the drops seen, by reason name.
func (w *DropWatch) Counts() map[string]int {
	w.t.Helper()
	w.disable()
	data, err := os.ReadFile(filepath.Join(tracefs, "trace"))
	if err != nil {
		w.t.Fatalf("read trace: %v", err)
	}
	counts := map[string]int{}
	for _, n := range w.reasons {
		counts[n] = 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "reason: "); i >= 0 && !strings.HasPrefix(line, "#") {
			counts[strings.TrimSpace(line[i+len("reason: "):])]++
		}
	}
	return counts
}

var reasonRE = regexp.MustCompile(`\{ (\d+), "([A-Z0-9_]+)" \}`)

// dropReasonCodes reads the enum's values from the tracepoint's print format:
// they differ between kernel versions.
func dropReasonCodes(format string) map[string]int {
	codes := map[string]int{}
	for _, m := range reasonRE.FindAllStringSubmatch(format, -1) {
		n, _ := strconv.Atoi(m[1])
		codes[m[2]] = n
	}
	return codes
}
