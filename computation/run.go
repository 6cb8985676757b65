package computation

import (
	"time"
)

// Run is one execution of a computation. Runs are a history: restarting a
// computation creates a new run; nothing restarts a run automatically.
type Run struct {
	ID             string    `json:"id"`
	ComputationID  string    `json:"computation_id"`
	WorkspaceID    string    `json:"workspace_id"`
	State          State     `json:"state"`
	Reason         Reason    `json:"reason,omitempty"`
	Message        string    `json:"message,omitempty"`
	ExitCode       *int      `json:"exit_code,omitempty"`
	NodeID         string    `json:"node_id,omitempty"`
	Driver         string    `json:"driver"`
	ManifestSHA256 string    `json:"manifest_sha256"`
	CPUSeconds     float64   `json:"cpu_seconds"`
	PeakMemory     int64     `json:"peak_memory_bytes"`
	ResultSHA256   string    `json:"result_sha256,omitempty"`
	ResultSize     int64     `json:"result_size,omitempty"`
	CreatedBy      string    `json:"created_by"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	// QueueDeadline is when a queued run fails with no_capacity.
	QueueDeadline time.Time  `json:"queue_deadline"`
	StartedAt     *time.Time `json:"started_at,omitempty"` // entered running
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
}

// RunUpdate is what a state change records besides the state. Zero fields
// leave the run's value as it is.
type RunUpdate struct {
	Reason       Reason
	Message      string
	NodeID       string
	ExitCode     *int
	CPUSeconds   float64
	PeakMemory   int64
	ResultSHA256 string
	ResultSize   int64
	// At is when the change happened (the agent's event time); zero means now.
	At time.Time
}

// RunEvent is one recorded state change of a run, shown to its
// participants as the run's history.
type RunEvent struct {
	RunID   string    `json:"run_id"`
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	State   State     `json:"state"`
	Reason  Reason    `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
}

// DriverFor returns the sandbox driver that runs an algorithm kind.
func DriverFor(kind string) string {
	if kind == "wasm" {
		return "wasm"
	}
	return "process"
}
