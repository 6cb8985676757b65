package workspace

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/identity"
)

// Authorizer checks and writes relations; satisfied by *authz.Authorizer.
type Authorizer interface {
	Check(ctx context.Context, subject, relation, object string) (bool, error)
	RequireVisible(ctx context.Context, subject, viewRelation, relation, object, notFoundMsg string) error
	Write(ctx context.Context, writes, deletes []authz.Tuple) error
}

// Service is the workspace service. Every method takes the acting
// principal and checks it through the authorizer.
type Service struct {
	store Store
	authz Authorizer
	runs  RunCounter
	now   func() time.Time
}

// NewService returns a workspace service. runs may be nil until the
// computation service exists; now nil means time.Now.
func NewService(store Store, az Authorizer, runs RunCounter, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, authz: az, runs: runs, now: func() time.Time { return now().UTC().Truncate(time.Microsecond) }}
}

// require returns not_found when p cannot see the workspace at all, so that
// workspaces of others are not disclosed, and forbidden when p can see it
// but lacks relation.
func (s *Service) require(ctx context.Context, p cove.Principal, id, relation string) error {
	return s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, relation, authz.Workspace(id), "workspace "+id+" not found")
}

// parentTuple links a workspace to the platform, whose admins may
// administer and audit it.
func parentTuple(wsID string) authz.Tuple {
	return authz.Tuple{Subject: authz.Platform, Relation: authz.ParentPlatform, Object: authz.Workspace(wsID)}
}

func roleTuple(wsID, userID string, r Role) authz.Tuple {
	return authz.Tuple{Subject: authz.User(userID), Relation: string(r), Object: authz.Workspace(wsID)}
}

func (s *Service) entry(p cove.Principal, wsID, action, target string) audit.Entry {
	return audit.Entry{ID: cove.NewID("aud"), Time: s.now(), ActorID: p.UserID, WorkspaceID: wsID, Action: action, Target: target, Outcome: audit.Success}
}

// Create creates a workspace with p as its owner.
func (s *Service) Create(ctx context.Context, p cove.Principal, name string) (*Workspace, error) {
	if err := identity.ValidateName("name", name, MaxNameLen); err != nil {
		return nil, err
	}
	now := s.now()
	w := &Workspace{ID: cove.NewID("ws"), Name: name, CreatedAt: now, UpdatedAt: now, Role: Owner}
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.CreateWorkspace(ctx, w); err != nil {
			return err
		}
		if err := tx.PutMember(ctx, w.ID, p.UserID, Owner, now); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, w.ID, "workspace.create", w.ID))
	})
	if err != nil {
		return nil, err
	}
	return w, s.authz.Write(ctx, []authz.Tuple{parentTuple(w.ID), roleTuple(w.ID, p.UserID, Owner)}, nil)
}

// List returns the workspaces p is a member of.
func (s *Service) List(ctx context.Context, p cove.Principal, page cove.Page) ([]*Workspace, error) {
	return s.store.FindWorkspacesOf(ctx, p.UserID, page.Normalize())
}

// Get returns a workspace p may see, with p's role in it.
func (s *Service) Get(ctx context.Context, p cove.Principal, id string) (*Workspace, error) {
	if err := s.require(ctx, p, id, authz.CanView); err != nil {
		return nil, err
	}
	w, err := s.store.FindWorkspaceByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if m, err := s.store.FindMember(ctx, id, p.UserID); err == nil {
		w.Role = m.Role
	}
	return w, nil
}

// Rename renames a workspace; owners and admins only.
func (s *Service) Rename(ctx context.Context, p cove.Principal, id, name string) (*Workspace, error) {
	if err := s.require(ctx, p, id, authz.CanManageMembers); err != nil {
		return nil, err
	}
	if err := identity.ValidateName("name", name, MaxNameLen); err != nil {
		return nil, err
	}
	var w *Workspace
	err := s.store.Atomic(ctx, func(tx Store) error {
		var err error
		if w, err = tx.FindWorkspaceByID(ctx, id); err != nil {
			return err
		}
		w.Name, w.UpdatedAt = name, s.now()
		if err := tx.UpdateWorkspace(ctx, w); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, id, "workspace.rename", id))
	})
	return w, err
}

// Delete deletes a workspace; owners only, and never while it has runs
// that have not finished.
func (s *Service) Delete(ctx context.Context, p cove.Principal, id string) error {
	if err := s.require(ctx, p, id, authz.CanDelete); err != nil {
		return err
	}
	if s.runs != nil {
		n, err := s.runs.CountActiveRuns(ctx, id)
		if err != nil {
			return err
		}
		if n > 0 {
			return cove.Errorf(cove.Conflict, "workspace %s has %d active runs; stop them first", id, n)
		}
	}
	var revoke []authz.Tuple
	for page := (cove.Page{Limit: cove.MaxPageLimit}); ; {
		ms, err := s.store.FindMembers(ctx, id, page)
		if err != nil {
			return err
		}
		for _, m := range ms {
			revoke = append(revoke, roleTuple(id, m.UserID, m.Role))
		}
		if len(ms) < page.Limit {
			break
		}
		page.After = ms[len(ms)-1].UserID
	}
	if err := s.authz.Write(ctx, nil, append(revoke, parentTuple(id))); err != nil {
		return err
	}
	return s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.DeleteWorkspace(ctx, id); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, id, "workspace.delete", id))
	})
}

// Members lists a workspace's members; anyone who can see it may.
func (s *Service) Members(ctx context.Context, p cove.Principal, id string, page cove.Page) ([]*MemberInfo, error) {
	if err := s.require(ctx, p, id, authz.CanView); err != nil {
		return nil, err
	}
	return s.store.FindMembers(ctx, id, page.Normalize())
}

// CreatedInvitation is a new invitation with its one-time token, shown
// only to the inviter, who passes it on.
type CreatedInvitation struct {
	Invitation
	Token string `json:"token"`
}

// Invite invites email to join with role. Owners and admins may invite;
// only owners may invite owners.
func (s *Service) Invite(ctx context.Context, p cove.Principal, wsID, email string, role Role) (*CreatedInvitation, error) {
	if err := s.require(ctx, p, wsID, authz.CanManageMembers); err != nil {
		return nil, err
	}
	email = identity.NormalizeEmail(email)
	if err := identity.ValidateEmail(email); err != nil {
		return nil, err
	}
	if err := role.Validate(); err != nil {
		return nil, err
	}
	if err := s.requireOutrank(ctx, p, wsID, role); err != nil {
		return nil, err
	}
	now := s.now()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, cove.Wrap(err, "could not make an invitation token")
	}
	token := "cvi_" + base64.RawURLEncoding.EncodeToString(b)
	inv := &CreatedInvitation{Token: token, Invitation: Invitation{
		ID: cove.NewID("inv"), WorkspaceID: wsID, Email: email, Role: role, InvitedBy: p.UserID,
		TokenHash: digest(token), ExpiresAt: now.Add(InvitationTTL), CreatedAt: now,
	}}
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.CreateInvitation(ctx, &inv.Invitation); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, wsID, "workspace.member.invite", inv.ID))
	})
	if err != nil {
		return nil, err
	}
	return inv, nil
}

// requireOutrank refuses to let p hand out or take away role when role is
// owner and p is not an owner.
func (s *Service) requireOutrank(ctx context.Context, p cove.Principal, wsID string, role Role) error {
	if role != Owner {
		return nil
	}
	ok, err := s.authz.Check(ctx, p.Subject(), string(Owner), authz.Workspace(wsID))
	if err != nil {
		return err
	}
	if !ok {
		return cove.Errorf(cove.Forbidden, "only owners may grant or take away the owner role")
	}
	return nil
}

// Invitations lists a workspace's invitations; owners and admins only.
func (s *Service) Invitations(ctx context.Context, p cove.Principal, wsID string, page cove.Page) ([]*Invitation, error) {
	if err := s.require(ctx, p, wsID, authz.CanManageMembers); err != nil {
		return nil, err
	}
	return s.store.FindInvitations(ctx, wsID, page.Normalize())
}

// Accept joins p to the invitation's workspace. The invitation must be
// addressed to p's email, unused, unrevoked and unexpired. Accepting when
// already a member keeps the higher of the two roles.
func (s *Service) Accept(ctx context.Context, p cove.Principal, token string) (*MemberInfo, error) {
	invalid := cove.Errorf(cove.NotFound, "the invitation is not valid; ask for a new one")
	if len(token) < 5 || len(token) > 100 || token[:4] != "cvi_" {
		return nil, invalid
	}
	now := s.now()
	var m *MemberInfo
	var grant, revoke authz.Tuple
	err := s.store.Atomic(ctx, func(tx Store) error {
		inv, err := tx.FindInvitationByHash(ctx, digest(token))
		if err != nil {
			return invalid
		}
		switch {
		case inv.AcceptedAt != nil:
			return cove.Errorf(cove.Conflict, "the invitation was already used; ask for a new one")
		case inv.RevokedAt != nil:
			return cove.Errorf(cove.NotFound, "the invitation was revoked; ask for a new one")
		case !now.Before(inv.ExpiresAt):
			return cove.Errorf(cove.NotFound, "the invitation expired on %s; ask for a new one", inv.ExpiresAt.Format(time.RFC3339))
		case inv.Email != p.Email:
			return cove.Errorf(cove.Forbidden, "the invitation is addressed to another email; sign in as %s", inv.Email)
		}
		role := inv.Role
		if old, err := tx.FindMember(ctx, inv.WorkspaceID, p.UserID); err == nil {
			if old.Role.rank() >= role.rank() {
				role = old.Role
			} else {
				revoke = roleTuple(inv.WorkspaceID, p.UserID, old.Role)
			}
		}
		inv.AcceptedAt, inv.AcceptedBy = &now, p.UserID
		if err := tx.UpdateInvitation(ctx, inv); err != nil {
			return err
		}
		if err := tx.PutMember(ctx, inv.WorkspaceID, p.UserID, role, now); err != nil {
			return err
		}
		grant = roleTuple(inv.WorkspaceID, p.UserID, role)
		if err := tx.RecordAudit(ctx, s.entry(p, inv.WorkspaceID, "workspace.member.accept", inv.ID)); err != nil {
			return err
		}
		m, err = tx.FindMember(ctx, inv.WorkspaceID, p.UserID)
		return err
	})
	if err != nil {
		return nil, err
	}
	var deletes []authz.Tuple
	if revoke.Relation != "" {
		deletes = append(deletes, revoke)
	}
	return m, s.authz.Write(ctx, []authz.Tuple{grant}, deletes)
}

// RevokeInvitation revokes an unused invitation; owners and admins only.
func (s *Service) RevokeInvitation(ctx context.Context, p cove.Principal, wsID, invID string) error {
	if err := s.require(ctx, p, wsID, authz.CanManageMembers); err != nil {
		return err
	}
	now := s.now()
	return s.store.Atomic(ctx, func(tx Store) error {
		inv, err := tx.FindInvitationByID(ctx, invID)
		if err != nil || inv.WorkspaceID != wsID {
			return cove.Errorf(cove.NotFound, "invitation %s not found", invID)
		}
		if inv.AcceptedAt != nil {
			return cove.Errorf(cove.Conflict, "the invitation was already accepted; remove the member instead")
		}
		if inv.RevokedAt == nil {
			inv.RevokedAt = &now
			if err := tx.UpdateInvitation(ctx, inv); err != nil {
				return err
			}
		}
		return tx.RecordAudit(ctx, s.entry(p, wsID, "workspace.invitation.revoke", invID))
	})
}

// ChangeRole sets a member's role. Owners and admins may change roles;
// only owners may make or unmake owners; the last owner cannot be demoted.
func (s *Service) ChangeRole(ctx context.Context, p cove.Principal, wsID, userID string, role Role) (*MemberInfo, error) {
	if err := s.require(ctx, p, wsID, authz.CanManageMembers); err != nil {
		return nil, err
	}
	if err := role.Validate(); err != nil {
		return nil, err
	}
	old, err := s.store.FindMember(ctx, wsID, userID)
	if err != nil {
		return nil, cove.Errorf(cove.NotFound, "user %s is not a member of workspace %s", userID, wsID)
	}
	if old.Role == role {
		return old, nil
	}
	if err := s.requireOutrank(ctx, p, wsID, role); err != nil {
		return nil, err
	}
	if err := s.requireOutrank(ctx, p, wsID, old.Role); err != nil {
		return nil, err
	}
	if err := lastOwnerGuard(ctx, s.store, wsID, old.Role, "demoted"); err != nil {
		return nil, err
	}
	if err := s.authz.Write(ctx, nil, []authz.Tuple{roleTuple(wsID, userID, old.Role)}); err != nil {
		return nil, err
	}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := lastOwnerGuard(ctx, tx, wsID, old.Role, "demoted"); err != nil {
			return err
		}
		if err := tx.PutMember(ctx, wsID, userID, role, old.CreatedAt); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, wsID, "workspace.member.role", userID+" "+string(old.Role)+"->"+string(role)))
	})
	if err != nil {
		// Put back the relation the failed change took away.
		_ = s.authz.Write(ctx, []authz.Tuple{roleTuple(wsID, userID, old.Role)}, nil)
		return nil, err
	}
	if err := s.authz.Write(ctx, []authz.Tuple{roleTuple(wsID, userID, role)}, nil); err != nil {
		return nil, err
	}
	old.Role = role
	return old, nil
}

// lastOwnerGuard refuses to demote or remove the only owner.
// Inside a transaction it first locks the workspace, so that two owners
// demoting each other at once cannot both pass.
func lastOwnerGuard(ctx context.Context, st Store, wsID string, role Role, what string) error {
	if role != Owner {
		return nil
	}
	if err := st.LockWorkspace(ctx, wsID); err != nil {
		return err
	}
	n, err := st.CountOwners(ctx, wsID)
	if err != nil {
		return err
	}
	if n <= 1 {
		return cove.Errorf(cove.Conflict, "the last owner cannot be %s; make someone else owner first", what)
	}
	return nil
}

// RemoveMember removes a member. Owners and admins may remove others
// (only owners may remove owners); anyone may remove themselves, except the
// last owner.
func (s *Service) RemoveMember(ctx context.Context, p cove.Principal, wsID, userID string) error {
	if userID != p.UserID {
		if err := s.require(ctx, p, wsID, authz.CanManageMembers); err != nil {
			return err
		}
	} else if err := s.require(ctx, p, wsID, authz.CanView); err != nil {
		return err
	}
	old, err := s.store.FindMember(ctx, wsID, userID)
	if err != nil {
		return cove.Errorf(cove.NotFound, "user %s is not a member of workspace %s", userID, wsID)
	}
	if userID != p.UserID {
		if err := s.requireOutrank(ctx, p, wsID, old.Role); err != nil {
			return err
		}
	}
	if err := lastOwnerGuard(ctx, s.store, wsID, old.Role, "removed"); err != nil {
		return err
	}
	if err := s.authz.Write(ctx, nil, []authz.Tuple{roleTuple(wsID, userID, old.Role)}); err != nil {
		return err
	}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := lastOwnerGuard(ctx, tx, wsID, old.Role, "removed"); err != nil {
			return err
		}
		if err := tx.DeleteMember(ctx, wsID, userID); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, wsID, "workspace.member.remove", userID))
	})
	if err != nil {
		_ = s.authz.Write(ctx, []authz.Tuple{roleTuple(wsID, userID, old.Role)}, nil)
	}
	return err
}

// SyncRelations writes the role relation of every membership in the store.
// It runs at start and repairs grants that failed after their commit.
func (s *Service) SyncRelations(ctx context.Context) error {
	var ts []authz.Tuple
	seen := map[string]bool{}
	err := s.store.FindAllMembers(ctx, func(m *MemberInfo) error {
		if !seen[m.WorkspaceID] {
			seen[m.WorkspaceID] = true
			ts = append(ts, parentTuple(m.WorkspaceID))
		}
		ts = append(ts, roleTuple(m.WorkspaceID, m.UserID, m.Role))
		return nil
	})
	if err != nil {
		return err
	}
	return s.authz.Write(ctx, ts, nil)
}

func digest(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}
