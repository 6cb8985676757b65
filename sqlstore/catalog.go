package sqlstore

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/catalog"
)

// CatalogStore implements catalog.Store.
type CatalogStore struct {
	db *DB
	q  querier
}

var _ catalog.Store = (*CatalogStore)(nil)

// NewCatalogStore returns the catalog store of db.
func NewCatalogStore(db *DB) *CatalogStore { return &CatalogStore{db: db, q: db.stmts} }

// Atomic runs fn in one transaction.
func (s *CatalogStore) Atomic(ctx context.Context, fn func(catalog.Store) error) error {
	return s.db.atomic(ctx, s.q, func(tx querier) error { return fn(&CatalogStore{db: s.db, q: tx}) })
}

// catalogRow is a row to scan, of a query or of a result set.
type catalogRow = interface{ Scan(...any) error }

// shareTable names the table of the workspaces one kind of entry is shared
// with, and its column naming the entry.
type shareTable struct{ table, column string }

var (
	datasetShares   = shareTable{"dataset_shares", "dataset_id"}
	algorithmShares = shareTable{"algorithm_shares", "algorithm_id"}
)

// putShares replaces the workspaces entry id is shared with.
func (s *CatalogStore) putShares(ctx context.Context, t shareTable, id string, workspaceIDs []string) error {
	if _, err := s.q.ExecContext(ctx, `DELETE FROM `+t.table+` WHERE `+t.column+` = $1`, id); err != nil {
		return s.db.fail(err, "could not save the sharing")
	}
	for _, ws := range workspaceIDs {
		if _, err := s.q.ExecContext(ctx, `INSERT INTO `+t.table+` (`+t.column+`, workspace_id) VALUES ($1, $2)`, id, ws); err != nil {
			return s.db.fail(err, "could not save the sharing")
		}
	}
	return nil
}

// findShares returns the workspaces each of ids is shared with, in ID
// order; all entries' when ids is nil.
func (s *CatalogStore) findShares(ctx context.Context, t shareTable, ids []string) (map[string][]string, error) {
	out := map[string][]string{}
	if ids != nil && len(ids) == 0 {
		return out, nil
	}
	query := `SELECT ` + t.column + `, workspace_id FROM ` + t.table
	if ids != nil {
		query += ` WHERE ` + t.column + ` IN (` + inList(1, len(ids)) + `)`
	}
	rows, err := s.q.QueryContext(ctx, query+` ORDER BY `+t.column+`, workspace_id`, stringArgs(ids)...)
	if err != nil {
		return nil, s.db.fail(err, "could not read the sharing")
	}
	pairs, err := collect(rows, func(r catalogRow) ([2]string, error) {
		var p [2]string
		err := r.Scan(&p[0], &p[1])
		return p, err
	})
	if err != nil {
		return nil, err
	}
	for _, p := range pairs {
		out[p[0]] = append(out[p[0]], p[1])
	}
	return out, nil
}

// inList returns "$from, $from+1, ..." for n values.
func inList(from, n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = "$" + strconv.Itoa(from+i)
	}
	return strings.Join(ps, ", ")
}

func stringArgs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// likePattern turns a name part into a LIKE pattern that matches it
// literally anywhere, in any case.
func likePattern(part string) string {
	if part == "" {
		return ""
	}
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(part)) + "%"
}

// visible is the condition that entry e of table, with share table t, is
// visible to the user named by placeholder $1: in one of their workspaces,
// public, or restricted to one of their workspaces. The column "own" it
// selects says whether it is in one of their workspaces.
func visible(t shareTable) (own, where string) {
	own = `EXISTS (SELECT 1 FROM members m WHERE m.workspace_id = e.workspace_id AND m.user_id = $1)`
	where = `(e.visibility = 'public'
		OR e.workspace_id IN (SELECT workspace_id FROM members WHERE user_id = $1)
		OR (e.visibility = 'restricted' AND EXISTS (SELECT 1 FROM ` + t.table + ` s JOIN members m ON m.workspace_id = s.workspace_id
			WHERE s.` + t.column + ` = e.id AND m.user_id = $1)))`
	return own, where
}

// findVisible runs a list query and fills in the shares of the entries of
// the user's own workspaces only.
func findVisible[T any](ctx context.Context, s *CatalogStore, t shareTable, query string, args []any, scan func(catalogRow) (T, error), id func(T) string, set func(T, []string)) ([]T, error) {
	rows, err := s.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.db.fail(err, "could not list the catalog")
	}
	type row struct {
		v   T
		own bool
	}
	rs, err := collect(rows, func(r catalogRow) (row, error) {
		var x row
		var err error
		x.v, err = scan(ownRow{r, &x.own})
		return x, err
	})
	if err != nil {
		return nil, err
	}
	ids := []string{}
	for _, r := range rs {
		if r.own {
			ids = append(ids, id(r.v))
		}
	}
	sh, err := s.findShares(ctx, t, ids)
	if err != nil {
		return nil, err
	}
	out := make([]T, len(rs))
	for i, r := range rs {
		out[i] = r.v
		if r.own {
			set(r.v, nonNil(sh[id(r.v)]))
		}
	}
	return out, nil
}

// ownRow scans one more column, "own", after the entry's.
type ownRow struct {
	r   catalogRow
	own *bool
}

func (o ownRow) Scan(dest ...any) error { return o.r.Scan(append(dest, o.own)...) }

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const datasetColumns = `id, workspace_id, name, description, format, file_name, sha256, size, visibility, policy, created_by, created_at, updated_at`

func scanDataset(r catalogRow) (*catalog.Dataset, error) {
	var d catalog.Dataset
	var policy string
	if err := r.Scan(&d.ID, &d.WorkspaceID, &d.Name, &d.Description, &d.Format, &d.FileName, &d.SHA256, &d.Size, &d.Visibility, &policy, &d.CreatedBy, &d.CreatedAt, &d.UpdatedAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(policy), &d.Policy); err != nil {
		return nil, err
	}
	d.Policy.AllowedAlgorithms = nonNil(d.Policy.AllowedAlgorithms)
	d.Policy.AllowedPublishers = nonNil(d.Policy.AllowedPublishers)
	d.SharedWith = []string{}
	return &d, nil
}

func policyJSON(p catalog.Policy) (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", cove.Wrap(err, "could not encode the policy")
	}
	return string(b), nil
}

// CreateDataset inserts a dataset and its shares.
func (s *CatalogStore) CreateDataset(ctx context.Context, d *catalog.Dataset) error {
	policy, err := policyJSON(d.Policy)
	if err != nil {
		return err
	}
	_, err = s.q.ExecContext(ctx, `INSERT INTO datasets (`+datasetColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		d.ID, d.WorkspaceID, d.Name, d.Description, d.Format, d.FileName, d.SHA256, d.Size, string(d.Visibility), policy, d.CreatedBy, d.CreatedAt.UTC(), d.UpdatedAt.UTC())
	if err != nil {
		return s.db.fail(err, "could not create the dataset")
	}
	return s.putShares(ctx, datasetShares, d.ID, d.SharedWith)
}

// FindDatasetByID returns a dataset with its shares.
func (s *CatalogStore) FindDatasetByID(ctx context.Context, id string) (*catalog.Dataset, error) {
	d, err := scanDataset(s.q.QueryRowContext(ctx, `SELECT `+datasetColumns+` FROM datasets WHERE id = $1`, id))
	if err != nil {
		return nil, s.db.one(err, "dataset "+id+" not found")
	}
	sh, err := s.findShares(ctx, datasetShares, []string{id})
	d.SharedWith = nonNil(sh[id])
	return d, err
}

// FindDatasets lists the datasets a user may see.
func (s *CatalogStore) FindDatasets(ctx context.Context, userID string, f catalog.Filter, page cove.Page) ([]*catalog.Dataset, error) {
	own, where := visible(datasetShares)
	query := `SELECT ` + qualified("e.", datasetColumns) + `, ` + own + ` FROM datasets e WHERE e.id > $2 AND ` + where + `
		AND ($3 = '' OR e.workspace_id = $3) AND ($4 = '' OR e.visibility = $4) AND ($5 = '' OR LOWER(e.name) LIKE $5 ESCAPE '\')
		ORDER BY e.id LIMIT $6`
	args := []any{userID, page.After, f.WorkspaceID, string(f.Visibility), likePattern(f.Name), page.Limit}
	return findVisible(ctx, s, datasetShares, query, args, scanDataset,
		func(d *catalog.Dataset) string { return d.ID },
		func(d *catalog.Dataset, ws []string) { d.SharedWith = ws })
}

// qualified qualifies every column of a list with a table alias.
func qualified(alias, columns string) string {
	cs := strings.Split(columns, ", ")
	for i, c := range cs {
		cs[i] = alias + c
	}
	return strings.Join(cs, ", ")
}

// UpdateDataset writes a dataset's metadata and shares.
func (s *CatalogStore) UpdateDataset(ctx context.Context, d *catalog.Dataset) error {
	res, err := s.q.ExecContext(ctx, `UPDATE datasets SET name = $2, description = $3, visibility = $4, updated_at = $5 WHERE id = $1`,
		d.ID, d.Name, d.Description, string(d.Visibility), d.UpdatedAt.UTC())
	if err := s.db.affected(res, err, "dataset "+d.ID+" not found"); err != nil {
		return err
	}
	return s.putShares(ctx, datasetShares, d.ID, d.SharedWith)
}

// UpdateDatasetPolicy writes a dataset's policy.
func (s *CatalogStore) UpdateDatasetPolicy(ctx context.Context, id string, p catalog.Policy, at time.Time) error {
	policy, err := policyJSON(p)
	if err != nil {
		return err
	}
	res, err := s.q.ExecContext(ctx, `UPDATE datasets SET policy = $2, updated_at = $3 WHERE id = $1`, id, policy, at.UTC())
	return s.db.affected(res, err, "dataset "+id+" not found")
}

// LockDataset locks the dataset's row on PostgreSQL; SQLite transactions
// here are immediate, so they already exclude each other.
func (s *CatalogStore) LockDataset(ctx context.Context, id string) error {
	return s.lockRow(ctx, "datasets", id, "dataset "+id+" not found")
}

func (s *CatalogStore) lockRow(ctx context.Context, table, id, notFound string) error {
	if s.db.engine.name != "postgres" {
		return nil
	}
	var got string
	err := s.q.QueryRowContext(ctx, `SELECT id FROM `+table+` WHERE id = $1 FOR UPDATE`, id).Scan(&got)
	return s.db.one(err, notFound)
}

// DeleteDataset deletes a dataset; its shares cascade.
func (s *CatalogStore) DeleteDataset(ctx context.Context, id string) error {
	res, err := s.q.ExecContext(ctx, `DELETE FROM datasets WHERE id = $1`, id)
	return s.db.affected(res, err, "dataset "+id+" not found")
}

// FindAllDatasets calls fn for every dataset.
func (s *CatalogStore) FindAllDatasets(ctx context.Context, fn func(*catalog.Dataset) error) error {
	rows, err := s.q.QueryContext(ctx, `SELECT `+datasetColumns+` FROM datasets ORDER BY id`)
	if err != nil {
		return s.db.fail(err, "could not list datasets")
	}
	ds, err := collect(rows, scanDataset)
	if err != nil {
		return err
	}
	sh, err := s.findShares(ctx, datasetShares, nil)
	if err != nil {
		return err
	}
	for _, d := range ds {
		d.SharedWith = nonNil(sh[d.ID])
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

const algorithmColumns = `id, workspace_id, name, description, kind, file_name, sha256, size, args, cwl, visibility, created_by, created_at, updated_at`

func scanAlgorithm(r catalogRow) (*catalog.Algorithm, error) {
	var a catalog.Algorithm
	var args string
	if err := r.Scan(&a.ID, &a.WorkspaceID, &a.Name, &a.Description, &a.Kind, &a.FileName, &a.SHA256, &a.Size, &args, &a.CWL, &a.Visibility, &a.CreatedBy, &a.CreatedAt, &a.UpdatedAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(args), &a.Args); err != nil {
		return nil, err
	}
	a.Args = nonNil(a.Args)
	a.SharedWith = []string{}
	return &a, nil
}

// CreateAlgorithm inserts an algorithm and its shares.
func (s *CatalogStore) CreateAlgorithm(ctx context.Context, a *catalog.Algorithm) error {
	args, err := json.Marshal(nonNil(a.Args))
	if err != nil {
		return cove.Wrap(err, "could not encode the arguments")
	}
	_, err = s.q.ExecContext(ctx, `INSERT INTO algorithms (`+algorithmColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		a.ID, a.WorkspaceID, a.Name, a.Description, a.Kind, a.FileName, a.SHA256, a.Size, string(args), a.CWL, string(a.Visibility), a.CreatedBy, a.CreatedAt.UTC(), a.UpdatedAt.UTC())
	if err != nil {
		return s.db.fail(err, "could not create the algorithm")
	}
	return s.putShares(ctx, algorithmShares, a.ID, a.SharedWith)
}

// FindAlgorithmByID returns an algorithm with its shares.
func (s *CatalogStore) FindAlgorithmByID(ctx context.Context, id string) (*catalog.Algorithm, error) {
	a, err := scanAlgorithm(s.q.QueryRowContext(ctx, `SELECT `+algorithmColumns+` FROM algorithms WHERE id = $1`, id))
	if err != nil {
		return nil, s.db.one(err, "algorithm "+id+" not found")
	}
	sh, err := s.findShares(ctx, algorithmShares, []string{id})
	a.SharedWith = nonNil(sh[id])
	return a, err
}

// FindAlgorithms lists the algorithms a user may see.
func (s *CatalogStore) FindAlgorithms(ctx context.Context, userID string, f catalog.Filter, page cove.Page) ([]*catalog.Algorithm, error) {
	own, where := visible(algorithmShares)
	query := `SELECT ` + qualified("e.", algorithmColumns) + `, ` + own + ` FROM algorithms e WHERE e.id > $2 AND ` + where + `
		AND ($3 = '' OR e.workspace_id = $3) AND ($4 = '' OR e.visibility = $4) AND ($5 = '' OR LOWER(e.name) LIKE $5 ESCAPE '\')
		AND ($6 = '' OR e.kind = $6)
		ORDER BY e.id LIMIT $7`
	args := []any{userID, page.After, f.WorkspaceID, string(f.Visibility), likePattern(f.Name), f.Kind, page.Limit}
	return findVisible(ctx, s, algorithmShares, query, args, scanAlgorithm,
		func(a *catalog.Algorithm) string { return a.ID },
		func(a *catalog.Algorithm, ws []string) { a.SharedWith = ws })
}

// UpdateAlgorithm writes an algorithm's metadata and shares.
func (s *CatalogStore) UpdateAlgorithm(ctx context.Context, a *catalog.Algorithm) error {
	res, err := s.q.ExecContext(ctx, `UPDATE algorithms SET name = $2, description = $3, visibility = $4, cwl = $5, updated_at = $6 WHERE id = $1`,
		a.ID, a.Name, a.Description, string(a.Visibility), a.CWL, a.UpdatedAt.UTC())
	if err := s.db.affected(res, err, "algorithm "+a.ID+" not found"); err != nil {
		return err
	}
	return s.putShares(ctx, algorithmShares, a.ID, a.SharedWith)
}

// LockAlgorithm locks the algorithm's row on PostgreSQL.
func (s *CatalogStore) LockAlgorithm(ctx context.Context, id string) error {
	return s.lockRow(ctx, "algorithms", id, "algorithm "+id+" not found")
}

// DeleteAlgorithm deletes an algorithm; its shares cascade.
func (s *CatalogStore) DeleteAlgorithm(ctx context.Context, id string) error {
	res, err := s.q.ExecContext(ctx, `DELETE FROM algorithms WHERE id = $1`, id)
	return s.db.affected(res, err, "algorithm "+id+" not found")
}

// FindAllAlgorithms calls fn for every algorithm.
func (s *CatalogStore) FindAllAlgorithms(ctx context.Context, fn func(*catalog.Algorithm) error) error {
	rows, err := s.q.QueryContext(ctx, `SELECT `+algorithmColumns+` FROM algorithms ORDER BY id`)
	if err != nil {
		return s.db.fail(err, "could not list algorithms")
	}
	as, err := collect(rows, scanAlgorithm)
	if err != nil {
		return err
	}
	sh, err := s.findShares(ctx, algorithmShares, nil)
	if err != nil {
		return err
	}
	for _, a := range as {
		a.SharedWith = nonNil(sh[a.ID])
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

// LockContent takes a transaction-scoped advisory lock on the digest on
// PostgreSQL; SQLite transactions here already exclude each other.
func (s *CatalogStore) LockContent(ctx context.Context, sha256 string) error {
	if s.db.engine.name != "postgres" {
		return nil
	}
	_, err := s.q.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "cove.content."+sha256)
	return s.db.fail(err, "database error")
}

// CountContentRefs counts the entries with the digest.
func (s *CatalogStore) CountContentRefs(ctx context.Context, sha256 string) (int, error) {
	var n int
	err := s.q.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM datasets WHERE sha256 = $1) + (SELECT COUNT(*) FROM algorithms WHERE sha256 = $1)`, sha256).Scan(&n)
	return n, s.db.fail(err, "database error")
}

// FindMissingWorkspaces returns the IDs that name no workspace.
func (s *CatalogStore) FindMissingWorkspaces(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.q.QueryContext(ctx, `SELECT id FROM workspaces WHERE id IN (`+inList(1, len(ids))+`)`, stringArgs(ids)...)
	if err != nil {
		return nil, s.db.fail(err, "database error")
	}
	found, err := collect(rows, func(r catalogRow) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	})
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		if !slices.Contains(found, id) {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// RecordAudit appends an audit entry in the store's transaction.
func (s *CatalogStore) RecordAudit(ctx context.Context, e audit.Entry) error {
	return recordAudit(ctx, s.db, s.q, e)
}
