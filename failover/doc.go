// Package failover decides when a server has failed and which server the
// client's bytes come from.
//
// It has three layers, so that the decisions can be tested without I/O:
//
//   - Detector (one per server) turns probe results, per-flow evidence and
//     carrier events into health transitions. It is pure: the caller passes
//     the time, so tests step a fake clock.
//   - Arbiter holds the roles (active, standby) and turns health
//     transitions and the operator's manual failover into Actions the
//     datapath carries out: takeover, standby lost, reintegration.
//   - Monitor runs the probers (SYNProber on Linux, else TCPProber; HTTPProber
//     with an HTTP path) and the LinkWatcher,
//     feeds the detectors and delivers their transitions on a channel the
//     datapath reads, never blocking the probers.
//
// The datapath owns the Arbiter: it reads Monitor.Events, applies each
// Transition to the Arbiter, carries out the Action, reports per-flow
// evidence with Monitor.Evidence and fences a manually failed server with
// Monitor.Fence.
package failover
