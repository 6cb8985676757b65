package dispatch_test

import (
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/dispatch"
	nodes "github.com/covecompute/cove/node"
	"github.com/covecompute/cove/scheduler"
)

// The dispatcher fills the interfaces its callers declare, and the
// services it is wired to fill those it declares.
var (
	_ computation.Stopper   = (*dispatch.Dispatcher)(nil)
	_ computation.LogReader = (*dispatch.Dispatcher)(nil)
	_ scheduler.Dispatcher  = (*dispatch.Dispatcher)(nil)

	_ dispatch.Runs     = (*computation.Service)(nil)
	_ dispatch.Blobs    = (*blob.FS)(nil)
	_ dispatch.Nodes    = (*nodes.Service)(nil)
	_ dispatch.Releaser = (*scheduler.Scheduler)(nil)
)
