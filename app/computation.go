package app

import (
	"context"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sqlstore"
)

// computationParts are the fields of Main that computations add.
type computationParts struct {
	// Computations is the computation service. The node wiring, which
	// builds the scheduler and dispatch after it, sets its Scheduler and
	// Stopper.
	Computations *computation.Service
	// RunLogs reads run logs for the API. The node wiring sets it to
	// dispatch; until then the logs route reports logs as unavailable.
	RunLogs computation.LogReader
}

// startComputations builds the computation service, restores its
// relations and mounts its routes. Results are read from the blob store.
func (m *Main) startComputations(ctx context.Context) error {
	m.Computations = computation.NewService(sqlstore.NewComputationStore(m.DB), m.Catalog, m.Authz, nil, nil)
	m.Computations.QueueTimeout = m.Config.Run.QueueTimeout
	m.Catalog.Usage = m.Computations
	if err := m.Computations.SyncRelations(ctx); err != nil {
		return err
	}
	m.API.MountComputations(m.Computations, mainLogs{m}, catalogBlobs{m.Blobs})
	return nil
}

// mainLogs reads logs through Main.RunLogs, which is set after the routes
// are mounted.
type mainLogs struct{ m *Main }

func (l mainLogs) ReadLogs(ctx context.Context, runID string, afterSeq int64, follow bool, fn func(runproto.LogLine) error) error {
	if l.m.RunLogs == nil {
		return cove.Errorf(cove.Unavailable, "run logs are not available yet; try again later")
	}
	return l.m.RunLogs.ReadLogs(ctx, runID, afterSeq, follow, fn)
}
