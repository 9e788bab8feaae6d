package tcpstate

// Counter names an event the flow table counts. The per-segment path counts
// instead of logging.
type Counter uint8

const (
	ClientSegments    Counter = iota // segments received from clients
	ServerSegments                   // segments received from servers
	ToClient                         // frames emitted toward clients
	ToPrimary                        // frames emitted toward the primary server
	ToBackup                         // frames emitted toward the backup server
	BackupAbsorbed                   // backup segments consumed by gating, not forwarded
	SynthesizedACKs                  // pure ACKs the gateway built itself
	AcksClamped                      // client acks lowered to what the backup has sent
	AcksSuppressed                   // primary pure ACKs held back by gating
	FlowsCreated                     // new flows from client SYNs
	FlowsExpired                     // flows removed by a timeout
	FlowsUnprotected                 // flows that lost their backup leg
	PrimaryRSTs                      // resets from a protected flow's live server (failure signal)
	BackupRSTs                       // backup resets seen
	SynAckTimeouts                   // backup SYN-ACK missing after the bound
	OptionMismatches                 // servers disagreed on an option the gateway cannot reconcile
	FinMismatches                    // servers sent FIN at different stream offsets
	Takeovers                        // flows whose live leg switched to the other server
	FlowsReset                       // flows reset because no leg could carry them on
	Divergences                      // flows reset at takeover because the replies differed
	Substitutions                    // reply differences the streams recovered from (a Date header)
	BlocksCompared                   // reply blocks compared between the legs
	BlocksDiffered                   // reply blocks that differed
	PrematureFins                    // live leg closed while the shadow had more to send
	Fenced                           // RSTs sent to a failed server for flows it lost
	ReplayedBytes                    // buffered bytes sent to clients after a takeover
	ReplayOverflows                  // flows whose replay buffer hit its bound
	AckLags                          // live leg left client data unacknowledged that the shadow acknowledged
	UnknownResets                    // resets sent for segments of connections the gateway does not know
	HalfOpenEvicted                  // oldest half-open flows removed to make room for a new SYN at the cap
	UnknownProbes                    // ACKs that make the client of an unknown connection say where its reset must land
	AcksHeld                         // client pure ACKs held for the client's next segment to carry (holdAck)
	SynRetries                       // client SYNs sent to a server again: a SYN-ACK missing, or an older connection reset
	DrainCutoffs                     // lagging shadows reset after a client's reset because they stopped catching up
	LeadLimits                       // segments to the live server whose window the lead bound narrowed
	LeadGraces                       // steps past the lead bound given because the backup was quiet
	AcksRepeatSkipped                // client ACKs not sent to a lagging leg: clamped, they repeated what it was told
	StaleConnsReset                  // a server's older connection on a new flow's 4-tuple reset, so its SYN is answered
	ChallengeAcks                    // ACKs answering a client's SYN with another ISN on a live flow (RFC 5961)
	CompareResyncs                   // reply comparisons moved past a shadow's bytes lost before the gateway and never resent
	HeldBelowSplice                  // segments of a taken-over flow's new live server kept from the client while its reply looked different
	NumCounters
)

var counterNames = [NumCounters]string{
	"client_segments", "server_segments", "to_client", "to_primary", "to_backup",
	"backup_absorbed", "synthesized_acks", "acks_clamped", "acks_suppressed",
	"flows_created", "flows_expired", "flows_unprotected", "primary_rsts",
	"backup_rsts", "synack_timeouts", "option_mismatches", "fin_mismatches",
	"takeovers", "flows_reset", "divergences", "substitutions", "blocks_compared",
	"blocks_differed", "premature_fins", "fenced", "replayed_bytes", "replay_overflows", "ack_lags", "unknown_resets",
	"half_open_evicted", "unknown_probes", "acks_held", "syn_retries", "drain_cutoffs",
	"lead_limits", "lead_graces", "acks_repeat_skipped", "stale_conns_reset",
	"challenge_acks", "compare_resyncs", "held_below_splice",
}

func (c Counter) String() string { return counterNames[c] }

// Drop names why a segment was dropped.
type Drop uint8

const (
	DropNoFlow        Drop = iota // not a SYN and no flow known
	DropFlowCap                   // SYN refused: flow table full
	DropHalfOpenCap               // SYN refused: too many half-open flows, none of them evictable
	DropOffWindowRST              // RST outside the receive window (RFC 5961)
	DropPrimaryRST                // primary RST held while the backup lives
	DropNotReady                  // segment before the handshake allows it
	DropBadSynAck                 // SYN-ACK acknowledging something else than the SYN
	DropStaleSyn                  // SYN with another ISN on a live flow
	DropDeadLeg                   // segment from a leg no longer part of the flow
	DropUnknownServer             // server segment for no configured service
	DropOutputFull                // more output than one call may emit
	DropFlowClosed                // segment for a flow already reset
	DropBadFlags                  // flags no TCP endpoint sends together (SYN+FIN, SYN+RST, none of SYN/ACK/RST)
	DropSynData                   // SYN carrying payload: the two servers could treat it differently
	DropOutOfWindow               // segment outside the window its sender was shown (blind injection)
	DropAckUnsent                 // segment acknowledging bytes never sent to its sender
	NumDrops
)

var dropNames = [NumDrops]string{
	"no_flow", "flow_cap", "half_open_cap", "off_window_rst", "primary_rst_held",
	"not_ready", "bad_synack", "stale_syn", "dead_leg", "unknown_server", "output_full", "flow_closed",
	"bad_flags", "syn_data", "out_of_window", "ack_unsent",
}

func (d Drop) String() string { return dropNames[d] }

// Stats holds the table's counters. The datapath owns it; readers take a
// copy under the datapath's lock.
type Stats struct {
	Counters [NumCounters]uint64
	Drops    [NumDrops]uint64
	// Stalls holds, per flow moved by a takeover while its client waited,
	// how long the client waited for its next frame.
	Stalls Histogram
}

// Map returns the counters by name, for status output.
func (s *Stats) Map() (counters, drops map[string]uint64) {
	counters = make(map[string]uint64, NumCounters)
	for i, v := range s.Counters {
		counters[Counter(i).String()] = v
	}
	drops = make(map[string]uint64, NumDrops)
	for i, v := range s.Drops {
		drops[Drop(i).String()] = v
	}
	return counters, drops
}
