// Package scheduler places runs on compute nodes: it reserves capacity on a
// node that has the driver, TEE kind and labels a run needs, never
// over-commits CPU or memory, and keeps runs that do not fit in a queue,
// first in first out within a workspace and round robin across workspaces,
// until capacity frees up or their queue deadline passes.
//
// It is event driven: a run is placed when it arrives, when a run ends, and
// when a node joins or comes back; nothing polls.
package scheduler

import (
	"time"

	"github.com/covecompute/cove/runproto"
)

// Request is a run waiting for a node.
type Request struct {
	RunID       string
	WorkspaceID string
	Driver      string            // "wasm" or "process"
	TEE         string            // required TEE kind: "none", "any", "vtpm", "sev-snp", "tdx"
	Labels      map[string]string // the node must carry each of these
	Resources   runproto.Resources
	// QueueDeadline is when the run fails with no_capacity if not placed.
	QueueDeadline time.Time
}

// Runs are placed on platform nodes and on the nodes of the run's own
// workspace, never on another workspace's nodes.
