package computation

import (
	"github.com/covecompute/cove"
)

// State is where a run is. Runs move forward through the states in the
// order below, or end early in failed or stopped.
type State string

// The run states.
const (
	Queued       State = "queued"       // waiting for capacity
	Scheduled    State = "scheduled"    // capacity reserved on a node
	Provisioning State = "provisioning" // the node is starting the sandbox
	Attesting    State = "attesting"    // the agent proved what it is
	Receiving    State = "receiving"    // the algorithm and datasets are streaming in
	Running      State = "running"      // the algorithm runs
	Publishing   State = "publishing"   // the outputs are sealed and uploaded
	Succeeded    State = "succeeded"
	Failed       State = "failed"
	Stopped      State = "stopped"
)

// Reason says why a run failed or stopped. The list is closed.
type Reason string

// The failure reasons.
const (
	PolicyDenied      Reason = "policy_denied"
	QuotaExceeded     Reason = "quota_exceeded"
	NoCapacity        Reason = "no_capacity"
	AttestationFailed Reason = "attestation_failed"
	HashMismatch      Reason = "hash_mismatch"
	AlgorithmError    Reason = "algorithm_error" // with the exit code
	InvalidAlgorithm  Reason = "invalid_algorithm"
	OOM               Reason = "oom"
	Timeout           Reason = "timeout"
	DiskFull          Reason = "disk_full"
	AgentLost         Reason = "agent_lost"
	NodeLost          Reason = "node_lost"
	StoppedByUser     Reason = "stopped_by_user"
	Internal          Reason = "internal"
)

// Reasons lists every reason.
var Reasons = []Reason{PolicyDenied, QuotaExceeded, NoCapacity, AttestationFailed, HashMismatch, AlgorithmError, InvalidAlgorithm, OOM, Timeout, DiskFull, AgentLost, NodeLost, StoppedByUser, Internal}

// transitions is the run state machine: from each state, the states a run
// may move to. Terminal states have none.
var transitions = map[State][]State{
	Queued:       {Scheduled, Failed, Stopped},
	Scheduled:    {Provisioning, Failed, Stopped},
	Provisioning: {Attesting, Failed, Stopped},
	Attesting:    {Receiving, Failed, Stopped},
	Receiving:    {Running, Failed, Stopped},
	Running:      {Publishing, Failed, Stopped},
	Publishing:   {Succeeded, Failed, Stopped},
	Succeeded:    nil,
	Failed:       nil,
	Stopped:      nil,
}

// States lists every state in run order.
var States = []State{Queued, Scheduled, Provisioning, Attesting, Receiving, Running, Publishing, Succeeded, Failed, Stopped}

// Terminal reports whether a run in s is over.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Stopped }

// Active reports whether a run in s holds or waits for resources.
func (s State) Active() bool { return !s.Terminal() && s != "" }

// Valid reports whether s is a state.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// CanMove reports whether a run may go from s to next.
func (s State) CanMove(next State) bool {
	for _, t := range transitions[s] {
		if t == next {
			return true
		}
	}
	return false
}

// Move checks a transition and returns a conflict error naming both states
// when it is not allowed. A failure or stop needs a reason; nothing else
// may carry one.
func Move(from, to State, reason Reason) error {
	if !from.CanMove(to) {
		return cove.Errorf(cove.Conflict, "a run cannot go from %s to %s", from, to)
	}
	if (to == Failed || to == Stopped) != (reason != "") {
		return cove.Errorf(cove.Invalid, "a move to %s needs a reason exactly when it fails or stops", to)
	}
	return nil
}
