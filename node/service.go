package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
)

// enrollPrefix makes a leaked enrollment token recognizable.
const enrollPrefix = "cve_"

// Service is the node registry. It is safe for concurrent use.
type Service struct {
	store Store
	authz *authz.Authorizer
	creds Credentials
	certs Certificates
	sched *scheduler.Scheduler
	runs  Runs
	cfg   Config
	now   func() time.Time
	log   *slog.Logger

	mu      sync.Mutex
	live    map[string]*live // by node ID
	removed map[string]bool  // removed by this process: heartbeats in flight must not revive them
	closed  bool

	stopFlush chan struct{} // closed by Close: the last_seen_at writer stops
	flushDone chan struct{}
	closeOnce sync.Once
}

// NewService returns the node registry. now nil means time.Now.
func NewService(store Store, az *authz.Authorizer, creds Credentials, certs Certificates, sched *scheduler.Scheduler, runs Runs, cfg Config, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = DefaultLostAfter
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = runproto.NodeHeartbeatInterval
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		store: store, authz: az, creds: creds, certs: certs, sched: sched, runs: runs, cfg: cfg, log: log,
		now:  func() time.Time { return now().UTC().Truncate(time.Microsecond) },
		live: map[string]*live{}, removed: map[string]bool{},
		stopFlush: make(chan struct{}), flushDone: make(chan struct{}),
	}
	go s.flushLoop()
	return s
}

func (s *Service) entry(p cove.Principal, wsID, action, target string) audit.Entry {
	return audit.Entry{ID: cove.NewID("aud"), Time: s.now(), ActorID: p.UserID, WorkspaceID: wsID, Action: action, Target: target, Outcome: audit.Success}
}

// parents are the tuples that place a node under the platform and, for a
// workspace's node, under its workspace.
func parents(n *Node) []authz.Tuple {
	ts := []authz.Tuple{authz.NewTuple(authz.Platform, authz.ParentPlatform, authz.Node(n.ID))}
	if n.WorkspaceID != "" {
		ts = append(ts, authz.NewTuple(authz.Workspace(n.WorkspaceID), authz.ParentWorkspace, authz.Node(n.ID)))
	}
	return ts
}

func digest(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// requireTokenScope checks that p may manage the enrollment tokens of a
// workspace, or of the platform when workspaceID is empty. notFound is the
// error for a caller who may not even know the scope exists; nil means the
// usual one.
func (s *Service) requireTokenScope(ctx context.Context, p cove.Principal, workspaceID string, notFound error) error {
	if workspaceID == "" {
		if p.UserID == "" {
			return cove.Errorf(cove.Unauthenticated, "sign in first")
		}
		ok, err := s.authz.Check(ctx, p.Subject(), authz.CanManage, authz.Platform)
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case notFound != nil:
			return notFound
		}
		return cove.Errorf(cove.Forbidden, "only platform admins may manage platform enrollment tokens; name a workspace you administer")
	}
	// Workspaces have no permission of their own for nodes: whoever may
	// manage its members (its admins, platform admins) manages its nodes,
	// as admin from workspace does on the node type.
	err := s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, authz.CanManageMembers, authz.Workspace(workspaceID), "workspace "+workspaceID+" not found")
	if notFound != nil && cove.ErrorCode(err) == cove.NotFound {
		return notFound
	}
	return err
}

// CreateEnrollToken makes a one-time enrollment token, valid for ttl (0
// means DefaultEnrollTokenTTL). With workspaceID the enrolling node becomes
// that workspace's node, and the workspace's admins may create the token;
// without, it becomes a platform node, and only platform admins may.
// autoApprove approves the node as soon as it enrolls. The secret is in
// the answer only.
func (s *Service) CreateEnrollToken(ctx context.Context, p cove.Principal, workspaceID string, ttl time.Duration, autoApprove bool) (*CreatedEnrollToken, error) {
	if err := s.requireTokenScope(ctx, p, workspaceID, nil); err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = DefaultEnrollTokenTTL
	}
	if ttl < MinEnrollTokenTTL || ttl > MaxEnrollTokenTTL {
		return nil, invalid("expires_in", "an enrollment token lasts from %s to %s", MinEnrollTokenTTL, MaxEnrollTokenTTL)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, cove.Wrap(err, "could not make an enrollment token")
	}
	secret := enrollPrefix + base64.RawURLEncoding.EncodeToString(b)
	now := s.now()
	t := &CreatedEnrollToken{Token: secret, EnrollToken: EnrollToken{
		ID: cove.NewID("net"), WorkspaceID: workspaceID, AutoApprove: autoApprove, CreatedBy: p.UserID,
		ExpiresAt: now.Add(ttl), CreatedAt: now, TokenHash: digest(secret),
	}}
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.CreateEnrollToken(ctx, &t.EnrollToken); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, workspaceID, "node.enroll_token.create", t.ID))
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// ListEnrollTokens lists the enrollment tokens of a workspace, or of the
// platform when workspaceID is empty, used or not; with the same rights as
// CreateEnrollToken.
func (s *Service) ListEnrollTokens(ctx context.Context, p cove.Principal, workspaceID string, page cove.Page) ([]*EnrollToken, error) {
	if err := s.requireTokenScope(ctx, p, workspaceID, nil); err != nil {
		return nil, err
	}
	return s.store.FindEnrollTokens(ctx, workspaceID, page.Normalize())
}

// RevokeEnrollToken revokes an unused token. A used one is conflict;
// revoking twice is no error.
func (s *Service) RevokeEnrollToken(ctx context.Context, p cove.Principal, id string) error {
	notFound := cove.Errorf(cove.NotFound, "enrollment token %s not found", id)
	t, err := s.store.FindEnrollTokenByID(ctx, id)
	if cove.ErrorCode(err) == cove.NotFound {
		return notFound
	} else if err != nil {
		return err
	}
	if err := s.requireTokenScope(ctx, p, t.WorkspaceID, notFound); err != nil {
		return err
	}
	if t.UsedAt != nil {
		return cove.Errorf(cove.Conflict, "enrollment token %s was already used by node %s; remove the node instead", id, t.NodeID)
	}
	if t.RevokedAt != nil {
		return nil
	}
	return s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.RevokeEnrollToken(ctx, id, s.now()); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, t.WorkspaceID, "node.enroll_token.revoke", id))
	})
}

// Enroll registers a node with a one-time enrollment token and returns
// its identity and NATS credential. A token that is unknown, used,
// revoked or expired is unauthenticated; what the node declares is checked
// by ValidateEnrollment.
func (s *Service) Enroll(ctx context.Context, r runproto.EnrollRequest) (*runproto.EnrollReply, error) {
	bad := cove.Errorf(cove.Unauthenticated, "the enrollment token is not valid; ask an admin for a new one")
	if !strings.HasPrefix(r.Token, enrollPrefix) || len(r.Token) > 100 {
		return nil, bad
	}
	t, err := s.store.FindEnrollTokenByHash(ctx, digest(r.Token))
	if cove.ErrorCode(err) == cove.NotFound {
		return nil, bad
	} else if err != nil {
		return nil, err
	}
	now := s.now()
	if err := usable(t, now); err != nil {
		return nil, err
	}
	req, err := ValidateEnrollment(r)
	if err != nil {
		return nil, err
	}
	n := &Node{
		ID: cove.NewID("node"), Name: req.Name, WorkspaceID: t.WorkspaceID,
		Capacity: req.Capacity, Drivers: req.Drivers, Labels: req.Labels, TEE: req.TEE,
		EnrollTokenID: t.ID, NATSUser: req.NATSUser, CreatedAt: now, UpdatedAt: now,
	}
	if t.AutoApprove {
		n.ApprovedAt, n.ApprovedBy = &now, t.CreatedBy
	}
	// The certificate and the JWT are issued before the node exists: the
	// CA keeps its own records, which on SQLite cannot be written inside
	// this transaction. Should the transaction fail (another node took the
	// token), the NATS user is revoked, and the certificate names a node
	// that never exists, which mTLS refuses.
	cred, err := s.issue(ctx, n, func() (*Certificate, error) { return s.certs.IssueNodeCertificate(ctx, n.ID, req.CSR) })
	if err != nil {
		return nil, err
	}
	reply := &runproto.EnrollReply{NodeID: n.ID, NATSURL: cred.url, HeartbeatMillis: s.cfg.HeartbeatInterval.Milliseconds(), NodeCredential: cred.NodeCredential}
	err = s.store.Atomic(ctx, func(tx Store) error {
		// Marking the token used first, and only if it is still usable,
		// lets exactly one of two racing enrollments through.
		if err := tx.UseEnrollToken(ctx, t.ID, n.ID, now); cove.ErrorCode(err) == cove.Conflict {
			if t, err := tx.FindEnrollTokenByID(ctx, t.ID); err == nil {
				if err := usable(t, now); err != nil {
					return err
				}
			}
			return bad
		} else if err != nil {
			return err
		}
		if err := tx.CreateNode(ctx, n); err != nil {
			return err
		}
		e := audit.Entry{ID: cove.NewID("aud"), Time: now, WorkspaceID: n.WorkspaceID, Action: "node.enroll", Target: n.ID,
			Outcome: audit.Success, Detail: "node " + n.Name + " enrolled with token " + t.ID + "; certificate " + n.CertificateSerial}
		return tx.RecordAudit(ctx, e)
	})
	if err != nil {
		if rerr := s.creds.RevokeNodeCredential(n.NATSUser); rerr != nil {
			s.log.Error("could not revoke the NATS user of a failed enrollment", "user", n.NATSUser, "err", rerr)
		}
		return nil, err
	}
	// The relations give rights, so they are written after the commit;
	// Start writes them again should this fail.
	if err := s.authz.Grant(ctx, parents(n)...); err != nil {
		s.log.Error("could not write a new node's relations; they are written again at the next start", "node", n.ID, "err", err)
	}
	s.log.Info("node enrolled", "node", n.ID, "name", n.Name, "workspace", n.WorkspaceID, "approved", n.ApprovedAt != nil)
	return reply, nil
}

// usable returns why t cannot enroll a node at now, or nil.
func usable(t *EnrollToken, now time.Time) error {
	switch {
	case t.UsedAt != nil:
		return cove.Errorf(cove.Unauthenticated, "the enrollment token was already used; ask an admin for a new one")
	case t.RevokedAt != nil:
		return cove.Errorf(cove.Unauthenticated, "the enrollment token was revoked; ask an admin for a new one")
	case !now.Before(t.ExpiresAt):
		return cove.Errorf(cove.Unauthenticated, "the enrollment token expired at %s; ask an admin for a new one", t.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// require returns not_found when p cannot see the node, so that others'
// nodes are not disclosed, and forbidden when p sees it but lacks relation.
func (s *Service) require(ctx context.Context, p cove.Principal, id, relation string) error {
	if !cove.ValidID("node", id) {
		if p.UserID == "" {
			return cove.Errorf(cove.Unauthenticated, "sign in first")
		}
		return cove.Errorf(cove.NotFound, "node %s not found", id)
	}
	return s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, relation, authz.Node(id), "node "+id+" not found")
}

// List returns the nodes p may see that match f: every node for platform
// admins, the nodes of their workspaces for others.
func (s *Service) List(ctx context.Context, p cove.Principal, f Filter) ([]*Node, error) {
	if p.UserID == "" {
		return nil, cove.Errorf(cove.Unauthenticated, "sign in first")
	}
	if f.State != "" {
		if err := f.State.Validate(); err != nil {
			return nil, err
		}
	}
	f.Page, f.IDs = f.Page.Normalize(), nil
	admin, err := s.authz.Check(ctx, p.Subject(), authz.CanManage, authz.Platform)
	if err != nil {
		return nil, err
	}
	switch {
	case admin:
	case f.WorkspaceID != "":
		if err := s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, authz.CanView, authz.Workspace(f.WorkspaceID), "workspace "+f.WorkspaceID+" not found"); err != nil {
			return nil, err
		}
	default:
		ids, err := s.authz.ListObjects(ctx, p.Subject(), authz.CanView, authz.TypeNode)
		if err != nil {
			return nil, err
		}
		f.IDs = append([]string{}, ids...)
	}
	nodes, err := s.store.FindNodes(ctx, f)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		s.decorate(n)
	}
	return nodes, nil
}

// Get returns a node p may see.
func (s *Service) Get(ctx context.Context, p cove.Principal, id string) (*Node, error) {
	if err := s.require(ctx, p, id, authz.CanView); err != nil {
		return nil, err
	}
	n, err := s.store.FindNodeByID(ctx, id)
	if err != nil {
		return nil, err
	}
	s.decorate(n)
	return n, nil
}

// decorate fills in the live view, which is fresher than the store.
func (s *Service) decorate(n *Node) {
	s.mu.Lock()
	if l := s.live[n.ID]; l != nil {
		n.Online, n.LostAt = l.online(), l.node.LostAt
		if !l.seen.IsZero() && (n.LastSeenAt == nil || l.seen.After(*n.LastSeenAt)) {
			seen := l.seen
			n.LastSeenAt = &seen
		}
	}
	s.mu.Unlock()
	n.State = n.state()
	if st, ok := s.sched.NodeStats(n.ID); ok {
		n.Reserved, n.Runs = st.Reserved, st.Runs
	}
}

// Approve approves an enrolled node, or puts a drained node back in
// service; whoever may manage the node may.
func (s *Service) Approve(ctx context.Context, p cove.Principal, id string) (*Node, error) {
	return s.change(ctx, p, id, "node.approve", func(n *Node, now time.Time) bool {
		changed := n.ApprovedAt == nil || n.Draining
		if n.ApprovedAt == nil {
			n.ApprovedAt, n.ApprovedBy = &now, p.UserID
		}
		n.Draining = false
		return changed
	})
}

// Drain stops placing new runs on a node; the runs it has finish. Approve
// puts it back in service.
func (s *Service) Drain(ctx context.Context, p cove.Principal, id string) (*Node, error) {
	return s.change(ctx, p, id, "node.drain", func(n *Node, _ time.Time) bool {
		changed := !n.Draining
		n.Draining = true
		return changed
	})
}

// change applies an admin's change to a node, stores and audits it, and
// tells the scheduler.
func (s *Service) change(ctx context.Context, p cove.Principal, id, action string, apply func(*Node, time.Time) bool) (*Node, error) {
	if err := s.require(ctx, p, id, authz.CanManage); err != nil {
		return nil, err
	}
	var n *Node
	err := s.store.Atomic(ctx, func(tx Store) error {
		var err error
		if n, err = tx.FindNodeByID(ctx, id); err != nil {
			return err
		}
		now := s.now()
		if !apply(n, now) {
			return nil
		}
		n.UpdatedAt = now
		n.State = n.state()
		if err := tx.UpdateNode(ctx, n); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, n.WorkspaceID, action, id))
	})
	if err != nil {
		return nil, err
	}
	s.updated(n)
	s.decorate(n)
	return n, nil
}

// Remove deletes a node. While runs are active on it, it is refused
// (conflict) unless force, which fails them with node_lost.
func (s *Service) Remove(ctx context.Context, p cove.Principal, id string, force bool) error {
	if err := s.require(ctx, p, id, authz.CanManage); err != nil {
		return err
	}
	n, err := s.store.FindNodeByID(ctx, id)
	if err != nil {
		return err
	}
	active, err := s.activeRuns(ctx, id)
	if err != nil {
		return err
	}
	if len(active) > 0 && !force {
		return cove.Errorf(cove.Conflict, "node %s has %d active runs; drain it and let them finish, or remove it with force, which fails them (node_lost)", id, len(active))
	}
	s.forget(id)
	// Off NATS at once; HTTP refuses a removed node's certificate because
	// the node is gone.
	if n.NATSUser != "" {
		if err := s.creds.RevokeNodeCredential(n.NATSUser); err != nil {
			return err
		}
	}
	if len(active) > 0 {
		s.failRuns(ctx, active, "node "+n.Name+" ("+id+") was removed by an admin")
	}
	// Rights go before the row: a failure after this leaves a node nobody
	// can see, which a second Remove by ID still deletes.
	if err := s.authz.Revoke(ctx, parents(n)...); err != nil {
		return err
	}
	return s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.DeleteNode(ctx, id); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, n.WorkspaceID, "node.remove", id))
	})
}

// activeRuns returns the runs placed on a node that have not ended.
func (s *Service) activeRuns(ctx context.Context, nodeID string) ([]*computation.Run, error) {
	runs, err := s.runs.FindRunsOnNode(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	var active []*computation.Run
	for _, r := range runs {
		if r.NodeID == nodeID && r.State.Active() && r.State != computation.Queued {
			active = append(active, r)
		}
	}
	return active, nil
}

// failRuns fails runs with node_lost and frees what they hold.
func (s *Service) failRuns(ctx context.Context, runs []*computation.Run, msg string) {
	for _, r := range runs {
		_, err := s.runs.Advance(ctx, r.ID, computation.Failed, computation.RunUpdate{Reason: computation.NodeLost, Message: msg})
		if err != nil && cove.ErrorCode(err) != cove.Conflict {
			s.log.Error("could not fail a run of a lost or removed node", "run", r.ID, "node", r.NodeID, "err", err)
			continue
		}
		s.sched.Release(ctx, r.ID)
	}
}
