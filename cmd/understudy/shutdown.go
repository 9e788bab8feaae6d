package main

import (
	"log/slog"
	"slices"
	"sort"

	"understudy/datapath"
)

// maxShutdownFlows bounds the per-flow lines of the shutdown report: a
// gateway holding a million flows must still stop promptly.
const maxShutdownFlows = 100

// reportShutdown logs what the gateway held when it stopped: one summary
// line (flows by state and by protection) and one line per flow still
// open, up to limit, ordered by VIP and client.
func reportShutdown(log *slog.Logger, st datapath.Status, flows []datapath.FlowInfo, limit int) {
	var open []datapath.FlowInfo
	byProt := map[string]int{}
	for _, f := range flows {
		if f.State == "closed" || f.State == "time_wait" {
			continue
		}
		open = append(open, f)
		byProt[f.Protection]++
	}
	states := make([]any, 0, len(st.Flows.ByState))
	for _, k := range sortedNames(st.Flows.ByState) {
		states = append(states, slog.Int(k, st.Flows.ByState[k]))
	}
	why := make([]any, 0, len(st.Flows.UnprotectedWhy))
	for _, k := range sortedNames(st.Flows.UnprotectedWhy) {
		why = append(why, slog.Int(k, st.Flows.UnprotectedWhy[k]))
	}
	log.Info("understudy stopping: flows at shutdown", "flows", st.Flows.Total, "open", len(open),
		slog.Group("by_state", states...),
		"protected", st.Flows.Protected, "unprotected", st.Flows.Unprotected,
		slog.Group("unprotected_why", why...),
		slog.Group("open_by_protection", "protected", byProt["protected"], "unprotected", byProt["unprotected"], "diverged", byProt["diverged"]),
		"failovers", st.Failovers)
	sortFlows(open)
	for i, f := range open {
		if i == limit {
			log.Warn("more flows open at shutdown, not listed", "not_listed", len(open)-limit)
			break
		}
		attrs := []any{"client", f.Client, "vip", f.VIP, "state", f.State, "protection", f.Protection}
		if f.Why != "" {
			attrs = append(attrs, "why", f.Why)
		}
		attrs = append(attrs, "live", f.Live, "bytes_from_client", f.FromClient, "bytes_to_client", f.ToClient)
		log.Warn("flow open at shutdown", attrs...)
	}
}

func sortedNames(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// sortFlows orders flows by VIP, then client.
func sortFlows(flows []datapath.FlowInfo) {
	slices.SortStableFunc(flows, func(a, b datapath.FlowInfo) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		return a.Client.Compare(b.Client)
	})
}
