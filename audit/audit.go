// Package audit records every mutating action: who did it, in which
// workspace, to what, when, and whether it succeeded. Platform admins read
// all of it; workspace admins read their workspace's part.
package audit

import (
	"context"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/authz"
)

// Outcomes of an audited action.
const (
	Success = "success"
	Denied  = "denied"
	Failure = "failure"
)

// Entry is one audited action.
type Entry struct {
	ID          string    `json:"id"`
	Time        time.Time `json:"time"`
	ActorID     string    `json:"actor_id,omitempty"` // empty for anonymous actions such as a failed login
	WorkspaceID string    `json:"workspace_id,omitempty"`
	Action      string    `json:"action"` // dotted verb such as "workspace.member.invite"
	Target      string    `json:"target,omitempty"`
	Outcome     string    `json:"outcome"`
	Detail      string    `json:"detail,omitempty"` // user-safe; never a secret
}

// Filter selects entries, newest first.
type Filter struct {
	WorkspaceID string
	ActorID     string
	Action      string
	Page        cove.Page
}

// Store persists entries.
type Store interface {
	// RecordAudit appends e. Returns internal on storage failure.
	RecordAudit(ctx context.Context, e Entry) error
	// FindAudit returns entries matching f, newest first.
	FindAudit(ctx context.Context, f Filter) ([]Entry, error)
}

// Authorizer makes the audit log's access decisions; satisfied by
// *authz.Authorizer.
type Authorizer interface {
	RequireVisible(ctx context.Context, subject, viewRelation, relation, object, notFoundMsg string) error
}

// Service reads the audit log on behalf of a principal.
type Service struct {
	Store Store
	Authz Authorizer
}

// List returns the entries p may read. Platform admins may read any entries;
// anyone else must name a workspace they administer, and asking for one they
// cannot see is not_found.
func (s *Service) List(ctx context.Context, p cove.Principal, f Filter) ([]Entry, error) {
	f.Page = f.Page.Normalize()
	if p.Admin {
		return s.Store.FindAudit(ctx, f)
	}
	if f.WorkspaceID == "" {
		return nil, cove.Errorf(cove.Forbidden, "only platform admins may read the whole audit log; name a workspace you administer")
	}
	if err := s.Authz.RequireVisible(ctx, p.Subject(), authz.CanView, authz.CanReadAudit, authz.Workspace(f.WorkspaceID), "workspace "+f.WorkspaceID+" not found"); err != nil {
		return nil, err
	}
	return s.Store.FindAudit(ctx, f)
}
