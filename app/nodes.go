package app

import (
	"context"
	"time"

	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/scheduler"
	"github.com/covecompute/cove/sqlstore"
)

// nodeParts are the fields of Main that nodes add.
type nodeParts struct {
	// Scheduler places runs on nodes. It starts without a dispatcher: runs
	// wait in its queue until the dispatch wiring calls SetDispatcher.
	Scheduler *scheduler.Scheduler
	// Nodes is the node registry.
	Nodes *node.Service
	// NodeConfig tunes node liveness and credentials; zero fields take the
	// node package's defaults. Set it before Run.
	NodeConfig node.Config
}

// startNodes builds the scheduler and the node registry over the
// computation service, mounts the node routes, and restores what a restart
// lost: the scheduler's reservations and queue from the runs in the store,
// and a lost timer for every node that was alive, so that a node that
// never comes back is marked lost and its runs fail.
func (m *Main) startNodes(ctx context.Context) error {
	runs := computationRuns{m.Computations}
	m.Scheduler = scheduler.New(runs, nil, nil)
	m.Scheduler.SetLogger(m.Log.With("component", "scheduler"))
	cfg := m.NodeConfig
	if cfg.LostAfter == 0 {
		cfg.LostAfter = m.Config.Node.LostAfter
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = m.Config.Node.HeartbeatInterval
	}
	if cfg.Log == nil {
		cfg.Log = m.Log.With("component", "nodes")
	}
	certs := nodeCertificates{m.CA}
	m.Nodes = node.NewService(sqlstore.NewNodeStore(m.DB), m.Authz, busCredentials{m.Bus}, certs, m.Scheduler, runs, cfg, nil)
	m.API.MountNodes(m.Nodes, certs)
	m.CA.SetRevocations(certRevocations{m})
	m.Computations.Scheduler = m.Scheduler
	if err := m.Scheduler.Recover(ctx); err != nil {
		return err
	}
	return m.Nodes.Start(ctx)
}

// closeNodes stops the node registry's lost timers and the scheduler's
// queue deadlines; Main.close calls it before closing the stores.
func (m *Main) closeNodes() {
	if m.Nodes != nil {
		m.Nodes.Close()
	}
	if m.Scheduler != nil {
		m.Scheduler.Close()
	}
}

// busCredentials issues node credentials on the NATS bus.
type busCredentials struct{ bus *natsbus.Bus }

var _ node.Credentials = busCredentials{}

func (c busCredentials) IssueNodeCredential(nodeID, user string, expires time.Time) (string, string, error) {
	cred, err := c.bus.IssueNodeUser(nodeID, user, expires)
	if err != nil {
		return "", "", err
	}
	return cred.JWT, c.bus.ClientURL(), nil
}

func (c busCredentials) RevokeNodeCredential(user string) error { return c.bus.RevokeUser(user) }

// computationRuns is the computation service as the scheduler and the node
// registry need it. The scheduler cannot name computation's types (package
// computation imports it), so it gets them translated here.
type computationRuns struct{ *computation.Service }

var (
	_ scheduler.Runs = computationRuns{}
	_ node.Runs      = computationRuns{}
)

// Fail fails a run for the scheduler.
func (r computationRuns) Fail(ctx context.Context, runID, reason, message string) error {
	_, err := r.Advance(ctx, runID, computation.Failed, computation.RunUpdate{Reason: computation.Reason(reason), Message: message})
	return err
}

// ActiveRuns returns the runs that have not ended with the requests they
// were enqueued with, for the scheduler's Recover.
func (r computationRuns) ActiveRuns(ctx context.Context) ([]scheduler.ActiveRun, error) {
	runs, err := r.FindActiveRuns(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]scheduler.ActiveRun, 0, len(runs))
	for _, run := range runs {
		a := scheduler.ActiveRun{ID: run.ID, WorkspaceID: run.WorkspaceID, Queued: run.State == computation.Queued, NodeID: run.NodeID, CreatedAt: run.CreatedAt}
		if req, err := r.RunRequest(ctx, run); err == nil {
			a.Request = &req
		}
		out = append(out, a)
	}
	return out, nil
}
