package sqlstore

import (
	"context"

	"github.com/covecompute/cove/audit"
)

// AuditStore implements audit.Store.
type AuditStore struct {
	db *DB
}

var _ audit.Store = (*AuditStore)(nil)

// NewAuditStore returns the audit store of db.
func NewAuditStore(db *DB) *AuditStore { return &AuditStore{db: db} }

// RecordAudit appends an entry outside any transaction.
func (s *AuditStore) RecordAudit(ctx context.Context, e audit.Entry) error {
	return recordAudit(ctx, s.db, s.db.stmts, e)
}

func recordAudit(ctx context.Context, db *DB, q querier, e audit.Entry) error {
	_, err := q.ExecContext(ctx, `INSERT INTO audit_log (id, time, actor_id, workspace_id, action, target, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		e.ID, e.Time.UTC(), e.ActorID, e.WorkspaceID, e.Action, e.Target, e.Outcome, e.Detail)
	return db.fail(err, "could not write the audit log")
}

// FindAudit lists entries newest first; Page.After is the ID of the last
// entry of the previous page.
func (s *AuditStore) FindAudit(ctx context.Context, f audit.Filter) ([]audit.Entry, error) {
	after := f.Page.After
	if after == "" {
		after = "~" // sorts after every ID
	}
	rows, err := s.db.stmts.QueryContext(ctx, `SELECT id, time, actor_id, workspace_id, action, target, outcome, detail FROM audit_log
		WHERE id < $1 AND ($2 = '' OR workspace_id = $2) AND ($3 = '' OR actor_id = $3) AND ($4 = '' OR action = $4)
		ORDER BY id DESC LIMIT $5`, after, f.WorkspaceID, f.ActorID, f.Action, f.Page.Limit)
	if err != nil {
		return nil, s.db.fail(err, "could not read the audit log")
	}
	return collect(rows, func(r interface{ Scan(...any) error }) (audit.Entry, error) {
		var e audit.Entry
		err := r.Scan(&e.ID, &e.Time, &e.ActorID, &e.WorkspaceID, &e.Action, &e.Target, &e.Outcome, &e.Detail)
		return e, err
	})
}
