package computation

import (
	"context"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
)

// Service is the computation service. Methods that take a principal check
// it through the authorizer; the run path's methods (FindRun, Advance,
// Manifest, ...) are for the control plane itself and check nothing.
//
// The SQL store is the source of truth and the computation's relations
// mirror it: relations that take rights away are removed before the store
// commits, those that give rights are added after it, and SyncRelations
// rewrites the additions at start.
type Service struct {
	store Store
	cat   Catalog
	authz *authz.Authorizer
	now   func() time.Time

	// Scheduler places runs; NewService sets it. Wiring that builds the
	// scheduler after the service sets it later, before serving. While it
	// is nil runs cannot start (Unavailable).
	Scheduler Scheduler
	// Stopper tells nodes to stop runs. While it is nil a stop only
	// records the new state, and the node kills the sandbox when it next
	// reconciles.
	Stopper Stopper
	// QueueTimeout is how long a new run may wait for a node;
	// DefaultQueueTimeout when zero.
	QueueTimeout time.Duration
}

// NewService returns a computation service. cat and sched may be nil
// until the catalog and the scheduler exist: what needs them is then
// Unavailable. now nil means time.Now.
func NewService(store Store, cat Catalog, az *authz.Authorizer, sched Scheduler, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, cat: cat, authz: az, Scheduler: sched, now: func() time.Time { return now().UTC().Truncate(time.Microsecond) }}
}

// require returns NotFound when p may not see computation id, so that
// computations of others are not disclosed, and Forbidden when p sees it
// but lacks relation.
func (s *Service) require(ctx context.Context, p cove.Principal, id, relation string) error {
	return s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, relation, authz.Computation(id), "computation "+id+" not found")
}

func (s *Service) entry(p cove.Principal, wsID, action, target string) *audit.Entry {
	return &audit.Entry{ID: cove.NewID("aud"), Time: s.now(), ActorID: p.UserID, WorkspaceID: wsID, Action: action, Target: target, Outcome: audit.Success}
}

// tuples returns the relations c grants: its workspace, its owner (also
// its runner), the members of the algorithm's workspace, the admins of each
// dataset's workspace and each result consumer.
func tuples(c *Computation) []authz.Tuple {
	obj := authz.Computation(c.ID)
	ts := []authz.Tuple{
		authz.NewTuple(authz.Workspace(c.WorkspaceID), authz.ParentWorkspace, obj),
		authz.NewTuple(authz.User(c.CreatedBy), authz.Owner, obj),
		authz.NewTuple(authz.User(c.CreatedBy), authz.Runner, obj),
		authz.NewTuple(authz.Userset(authz.Workspace(c.AlgorithmWorkspaceID), authz.Member), authz.AlgorithmProvider, obj),
	}
	for _, d := range c.Datasets {
		ts = append(ts, authz.NewTuple(authz.Userset(authz.Workspace(d.WorkspaceID), authz.Admin), authz.DatasetProvider, obj))
	}
	for _, rc := range c.ResultConsumers {
		ts = append(ts, authz.NewTuple(authz.User(rc.UserID), authz.ResultConsumer, obj))
	}
	return dedup(ts)
}

func dedup(ts []authz.Tuple) []authz.Tuple {
	seen := map[authz.Tuple]bool{}
	out := ts[:0]
	for _, t := range ts {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// minus returns the tuples of a that are not in b.
func minus(a, b []authz.Tuple) []authz.Tuple {
	var out []authz.Tuple
	for _, t := range a {
		if !slices.Contains(b, t) {
			out = append(out, t)
		}
	}
	return out
}

func (s *Service) catalog() (Catalog, error) {
	if s.cat == nil {
		return nil, cove.Errorf(cove.Unavailable, "the catalog is not available; try again later")
	}
	return s.cat, nil
}

// define checks spec and sets c's definition from it and from the catalog
// as p may use it: the parts, their providers' workspaces and the manifest.
func (s *Service) define(ctx context.Context, p cove.Principal, c *Computation, spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	spec = spec.normalize()
	cat, err := s.catalog()
	if err != nil {
		return err
	}
	alg, err := cat.UseAlgorithm(ctx, p, spec.AlgorithmID)
	if err != nil {
		return field(err, "algorithm_id", "algorithm "+spec.AlgorithmID)
	}
	dss := make([]*catalog.Dataset, len(spec.Datasets))
	for i, d := range spec.Datasets {
		if dss[i], err = cat.UseDataset(ctx, p, d.DatasetID); err != nil {
			return field(err, fmt.Sprintf("datasets[%d].dataset_id", i), fmt.Sprintf("dataset %q", d.Name))
		}
		spec.Datasets[i].WorkspaceID = dss[i].WorkspaceID
	}
	users := make([]string, len(spec.ResultConsumers))
	for i, rc := range spec.ResultConsumers {
		users[i] = rc.UserID
	}
	missing, err := s.store.MissingUsers(ctx, users)
	if err != nil {
		return err
	}
	var ps problems
	for _, id := range missing {
		ps.add("result_consumers", "user %s does not exist", id)
	}
	if err := ps.err("computation"); err != nil {
		return err
	}
	m, err := buildManifest(c.ID, spec, alg, dss)
	if err != nil {
		return err
	}
	canon, sum, err := m.Canonical()
	if err != nil {
		return err
	}
	c.Name = spec.Name
	if c.Name == "" {
		c.Name = alg.Name
	}
	c.Description, c.AlgorithmID, c.AlgorithmWorkspaceID = spec.Description, alg.ID, alg.WorkspaceID
	c.Args, c.Datasets, c.ResultConsumers = spec.Args, spec.Datasets, spec.ResultConsumers
	c.Limits, c.Network, c.Labels = m.Limits, spec.Network, spec.Labels
	c.Manifest, c.Canonical, c.ManifestSHA256 = m, canon, sum
	return nil
}

// field prefixes a catalog error with what it was about, keeping its code.
func field(err error, name, what string) error {
	if code := cove.ErrorCode(err); code == cove.NotFound || code == cove.Forbidden || code == cove.Invalid {
		return cove.Errorf(code, "%s: %s", what, cove.ErrorMessage(err)).WithDetails(cove.Detail{Field: name, Message: cove.ErrorMessage(err)})
	}
	return err
}

// Create creates a computation in a workspace where p may write, with p
// as its owner and runner. The algorithm and datasets must be ones p may
// use; their policies are checked when it runs (see DryRun), not here,
// except that their TEE requirements must be compatible.
func (s *Service) Create(ctx context.Context, p cove.Principal, workspaceID string, spec Spec) (*Computation, error) {
	if err := s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, authz.CanWrite, authz.Workspace(workspaceID), "workspace "+workspaceID+" not found"); err != nil {
		return nil, err
	}
	now := s.now()
	c := &Computation{ID: cove.NewID("cmp"), WorkspaceID: workspaceID, Approvals: []Approval{}, CreatedBy: p.UserID, CreatedAt: now, UpdatedAt: now}
	if err := s.define(ctx, p, c, spec); err != nil {
		return nil, err
	}
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.CreateComputation(ctx, c); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, *s.entry(p, workspaceID, "computation.create", c.ID))
	})
	if err != nil {
		return nil, err
	}
	return c, s.authz.Write(ctx, tuples(c), nil)
}

// Get returns a computation p participates in or whose workspace p is in.
func (s *Service) Get(ctx context.Context, p cove.Principal, id string) (*Computation, error) {
	if err := s.require(ctx, p, id, authz.CanView); err != nil {
		return nil, err
	}
	return s.store.FindComputationByID(ctx, id)
}

// List returns the computations p may see, by ID: those of p's workspaces
// and those p participates in; with workspaceID, only that workspace's.
func (s *Service) List(ctx context.Context, p cove.Principal, workspaceID string, page cove.Page) ([]*Computation, error) {
	page = page.Normalize()
	if workspaceID != "" {
		if err := s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, authz.CanView, authz.Workspace(workspaceID), "workspace "+workspaceID+" not found"); err != nil {
			return nil, err
		}
	}
	ids, err := s.authz.ListObjects(ctx, p.Subject(), authz.CanView, authz.TypeComputation)
	if err != nil {
		return nil, err
	}
	i, _ := slices.BinarySearch(ids, page.After)
	if i < len(ids) && ids[i] == page.After {
		i++
	}
	var out []*Computation
	// Relations may name computations the filter drops or that are gone,
	// so read chunks until the page is full.
	for i < len(ids) && len(out) < page.Limit {
		chunk := ids[i:min(i+page.Limit, len(ids))]
		i += len(chunk)
		cs, err := s.store.FindComputations(ctx, Filter{IDs: chunk, WorkspaceID: workspaceID})
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	if len(out) > page.Limit {
		out = out[:page.Limit]
	}
	return out, nil
}

// Update replaces a computation's definition; the owner (while a member
// of its workspace) and workspace admins may. Once the computation has run
// it is frozen and Update is Conflict. A changed manifest clears the
// approvals, which were given for the old one.
func (s *Service) Update(ctx context.Context, p cove.Principal, id string, spec Spec) (*Computation, error) {
	if err := s.require(ctx, p, id, authz.CanEdit); err != nil {
		return nil, err
	}
	old, err := s.store.FindComputationByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if old.Frozen {
		return nil, frozen(id)
	}
	c := &Computation{ID: old.ID, WorkspaceID: old.WorkspaceID, CreatedBy: old.CreatedBy, CreatedAt: old.CreatedAt, UpdatedAt: s.now()}
	if err := s.define(ctx, p, c, spec); err != nil {
		return nil, err
	}
	oldT, newT := tuples(old), tuples(c)
	revoke, grant := minus(oldT, newT), minus(newT, oldT)
	if err := s.authz.Write(ctx, nil, revoke); err != nil {
		return nil, err
	}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.LockComputation(ctx, id); err != nil {
			return err
		}
		cur, err := tx.FindComputationByID(ctx, id)
		if err != nil {
			return err
		}
		if cur.Frozen {
			return frozen(id)
		}
		if err := tx.UpdateComputation(ctx, c); err != nil {
			return err
		}
		c.Approvals = cur.Approvals
		if cur.ManifestSHA256 != c.ManifestSHA256 {
			c.Approvals = []Approval{}
			if err := tx.DeleteApprovals(ctx, id); err != nil {
				return err
			}
		}
		return tx.RecordAudit(ctx, *s.entry(p, c.WorkspaceID, "computation.update", id))
	})
	if err != nil {
		// Put back the relations the failed update took away.
		_ = s.authz.Write(ctx, revoke, nil)
		return nil, err
	}
	return c, s.authz.Write(ctx, grant, nil)
}

func frozen(id string) error {
	return cove.Errorf(cove.Conflict, "computation %s has run, so it can no longer change; create a new computation instead", id)
}

// Delete deletes a computation with its runs; the owner and workspace
// admins may, but not while a run of it is active.
func (s *Service) Delete(ctx context.Context, p cove.Principal, id string) error {
	if err := s.require(ctx, p, id, authz.CanEdit); err != nil {
		return err
	}
	c, err := s.store.FindComputationByID(ctx, id)
	if err != nil {
		return err
	}
	if err := activeGuard(ctx, s.store, id); err != nil {
		return err
	}
	revoke := tuples(c)
	if err := s.authz.Write(ctx, nil, revoke); err != nil {
		return err
	}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.LockComputation(ctx, id); err != nil {
			return err
		}
		if err := activeGuard(ctx, tx, id); err != nil {
			return err
		}
		if err := tx.DeleteComputation(ctx, id); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, *s.entry(p, c.WorkspaceID, "computation.delete", id))
	})
	if err != nil {
		_ = s.authz.Write(ctx, revoke, nil)
	}
	return err
}

func activeGuard(ctx context.Context, st Store, id string) error {
	n, err := st.CountRuns(ctx, RunFilter{ComputationID: id, Active: true})
	if err != nil {
		return err
	}
	if n > 0 {
		return cove.Errorf(cove.Conflict, "computation %s has %d active run(s); stop them first", id, n)
	}
	return nil
}

// Approve records p's approval of the datasets p provides to a
// computation: decision.DatasetID, or all of them when it is empty. A
// dataset's providers are the admins of its workspace. The approval holds
// for the current manifest only.
func (s *Service) Approve(ctx context.Context, p cove.Principal, id string, d Decision) (*Computation, error) {
	return s.decide(ctx, p, id, d, Approved)
}

// Reject records p's rejection, like Approve: runs are blocked until the
// provider approves.
func (s *Service) Reject(ctx context.Context, p cove.Principal, id string, d Decision) (*Computation, error) {
	return s.decide(ctx, p, id, d, Rejected)
}

func (s *Service) decide(ctx context.Context, p cove.Principal, id string, d Decision, decision string) (*Computation, error) {
	if err := s.require(ctx, p, id, authz.CanApprove); err != nil {
		return nil, err
	}
	if utf8.RuneCountInString(d.Comment) > MaxCommentLen || !utf8.ValidString(d.Comment) {
		return nil, cove.Errorf(cove.Invalid, "the comment must be valid UTF-8 of at most %d characters", MaxCommentLen).WithDetails(cove.Detail{Field: "comment", Message: "too long"})
	}
	c, err := s.store.FindComputationByID(ctx, id)
	if err != nil {
		return nil, err
	}
	admin := map[string]bool{}
	var targets []DatasetRef
	named := false
	for _, ref := range c.Datasets {
		if d.DatasetID != "" && ref.DatasetID != d.DatasetID {
			continue
		}
		named = true
		ok, seen := admin[ref.WorkspaceID]
		if !seen {
			if ok, err = s.authz.Check(ctx, p.Subject(), authz.Admin, authz.Workspace(ref.WorkspaceID)); err != nil {
				return nil, err
			}
			admin[ref.WorkspaceID] = ok
		}
		if ok {
			targets = append(targets, ref)
		}
	}
	switch {
	case d.DatasetID != "" && !named:
		return nil, cove.Errorf(cove.NotFound, "dataset %s is not part of computation %s", d.DatasetID, id)
	case d.DatasetID != "" && len(targets) == 0:
		return nil, cove.Errorf(cove.Forbidden, "only admins of the workspace that provides dataset %s may decide on it", d.DatasetID)
	case len(targets) == 0:
		return nil, cove.Errorf(cove.Forbidden, "you provide none of the datasets of computation %s", id)
	}
	now := s.now()
	err = s.store.Atomic(ctx, func(tx Store) error {
		for _, t := range targets {
			a := Approval{DatasetID: t.DatasetID, Decision: decision, UserID: p.UserID, Comment: d.Comment, ManifestSHA256: c.ManifestSHA256, At: now}
			if err := tx.PutApproval(ctx, id, a); err != nil {
				return err
			}
			action := "computation.approve"
			if decision == Rejected {
				action = "computation.reject"
			}
			if err := tx.RecordAudit(ctx, *s.entry(p, c.WorkspaceID, action, id+" "+t.DatasetID)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.store.FindComputationByID(ctx, id)
}

// DryRun reports every blocker that would keep p from running a
// computation now, all at once; anyone who may see the computation may
// ask.
func (s *Service) DryRun(ctx context.Context, p cove.Principal, id string) (*DryRun, error) {
	c, err := s.Get(ctx, p, id)
	if err != nil {
		return nil, err
	}
	bs, err := s.blockers(ctx, p, c)
	if err != nil {
		return nil, err
	}
	if bs == nil {
		bs = []Blocker{}
	}
	return &DryRun{ComputationID: id, ManifestSHA256: c.ManifestSHA256, Runnable: len(bs) == 0, Blockers: bs}, nil
}

// hidden reports whether a catalog error means the entry is gone or out of
// reach, which blocks a run, rather than a failure to answer.
func hidden(err error) bool {
	code := cove.ErrorCode(err)
	return code == cove.NotFound || code == cove.Forbidden
}

// blockers evaluates everything a run of c by p needs. The catalog is
// asked as c's owner: a computation runs on the rights of whoever
// assembled it, so it stops running when they lose them.
func (s *Service) blockers(ctx context.Context, p cove.Principal, c *Computation) ([]Blocker, error) {
	var bs []Blocker
	ok, err := s.authz.Check(ctx, p.Subject(), authz.CanRun, authz.Computation(c.ID))
	if err != nil {
		return nil, err
	}
	if !ok {
		bs = append(bs, Blocker{Kind: BlockPermission, Message: "you may not start runs of this computation; its owner may"})
	}
	cat, err := s.catalog()
	if err != nil {
		return nil, err
	}
	owner := cove.Principal{UserID: c.CreatedBy}
	alg, err := cat.UseAlgorithm(ctx, owner, c.AlgorithmID)
	if hidden(err) {
		alg = nil
		bs = append(bs, Blocker{Kind: BlockCatalog, Message: fmt.Sprintf("algorithm %s is no longer available to the computation's owner: %s", c.AlgorithmID, cove.ErrorMessage(err))})
	} else if err != nil {
		return nil, err
	}
	dss := make([]*catalog.Dataset, len(c.Datasets))
	for i, ref := range c.Datasets {
		ds, err := cat.UseDataset(ctx, owner, ref.DatasetID)
		if hidden(err) {
			bs = append(bs, Blocker{Kind: BlockCatalog, DatasetID: ref.DatasetID, Message: fmt.Sprintf("dataset %q is no longer available to the computation's owner: %s", ref.Name, cove.ErrorMessage(err))})
			continue
		} else if err != nil {
			return nil, err
		}
		dss[i] = ds
	}
	m := c.Manifest
	bs = append(bs, contentBlockers(m, alg, dss)...)
	bs = append(bs, policyBlockers(m, alg, dss)...)
	bs = append(bs, approvalBlockers(c, dss)...)
	bs = append(bs, consumerBlockers(m)...)
	if s.Scheduler == nil {
		bs = append(bs, Blocker{Kind: BlockPlacement, Message: "no scheduler is running; runs cannot be placed yet"})
	} else {
		// There is no run yet; the computation's ID stands in for its ID.
		for _, b := range s.Scheduler.Blockers(request(c, c.ID, time.Time{})) {
			bs = append(bs, Blocker{Kind: BlockPlacement, Message: b})
		}
	}
	return bs, nil
}

// request is what the scheduler needs to place a run of c.
func request(c *Computation, runID string, deadline time.Time) scheduler.Request {
	m := c.Manifest
	return scheduler.Request{
		RunID: runID, WorkspaceID: c.WorkspaceID, Driver: DriverFor(m.Algorithm.Kind), TEE: m.RequiredTEE, Labels: c.Labels,
		Resources:     runproto.Resources{CPUs: m.Limits.CPUs, MemoryBytes: m.Limits.MemoryBytes, DiskBytes: m.Limits.DiskBytes},
		QueueDeadline: deadline,
	}
}

// SyncRelations writes the relations of every computation in the store.
// It runs at start and repairs grants that failed after their commit.
func (s *Service) SyncRelations(ctx context.Context) error {
	page := cove.Page{Limit: cove.MaxPageLimit}
	for {
		cs, err := s.store.FindComputations(ctx, Filter{Page: page})
		if err != nil {
			return err
		}
		var ts []authz.Tuple
		for _, c := range cs {
			ts = append(ts, tuples(c)...)
		}
		if err := s.authz.Write(ctx, ts, nil); err != nil {
			return err
		}
		if len(cs) < page.Limit {
			return nil
		}
		page.After = cs[len(cs)-1].ID
	}
}
