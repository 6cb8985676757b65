package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/computation"
)

// ComputationStore implements computation.Store.
type ComputationStore struct {
	db *DB
	q  querier
}

var _ computation.Store = (*ComputationStore)(nil)

// NewComputationStore returns the computation store of db.
func NewComputationStore(db *DB) *ComputationStore { return &ComputationStore{db: db, q: db.stmts} }

// Atomic runs fn in one transaction.
func (s *ComputationStore) Atomic(ctx context.Context, fn func(computation.Store) error) error {
	return s.db.atomic(ctx, s.q, func(tx querier) error { return fn(&ComputationStore{db: s.db, q: tx}) })
}

// forUpdate is the row-lock suffix of a SELECT on PostgreSQL. SQLite
// transactions here are immediate, so they already exclude each other.
func (s *ComputationStore) forUpdate() string {
	if s.db.engine.name == "postgres" {
		return " FOR UPDATE"
	}
	return ""
}

// toJSON encodes the JSON columns: slices and maps of plain values.
func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only strings, maps of strings and plain structs
	}
	return string(b)
}

const computationColumns = `id, workspace_id, name, description, algorithm_id, algorithm_workspace_id, args, result_consumers,
	cpus, memory_bytes, disk_bytes, max_duration_seconds, network, labels, manifest, manifest_sha256, created_by, created_at, updated_at`

// computationSelect reads a computation; it is frozen once it has a run.
const computationSelect = `SELECT ` + computationColumns + `, EXISTS (SELECT 1 FROM runs r WHERE r.computation_id = computations.id) FROM computations`

func scanComputation(r interface{ Scan(...any) error }) (*computation.Computation, error) {
	var (
		c                       computation.Computation
		args, consumers, labels string
		manifest                string
	)
	err := r.Scan(&c.ID, &c.WorkspaceID, &c.Name, &c.Description, &c.AlgorithmID, &c.AlgorithmWorkspaceID, &args, &consumers,
		&c.Limits.CPUs, &c.Limits.MemoryBytes, &c.Limits.DiskBytes, &c.Limits.MaxDurationSeconds, &c.Network, &labels,
		&manifest, &c.ManifestSHA256, &c.CreatedBy, &c.CreatedAt, &c.UpdatedAt, &c.Frozen)
	if err != nil {
		return nil, err
	}
	c.Canonical = []byte(manifest)
	c.Manifest = new(computation.Manifest)
	for _, f := range []struct {
		src string
		dst any
	}{{args, &c.Args}, {consumers, &c.ResultConsumers}, {labels, &c.Labels}, {manifest, c.Manifest}} {
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return nil, err
		}
	}
	c.Datasets, c.Approvals = []computation.DatasetRef{}, []computation.Approval{}
	return &c, nil
}

// CreateComputation inserts c and its datasets.
func (s *ComputationStore) CreateComputation(ctx context.Context, c *computation.Computation) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO computations (`+computationColumns+`) VALUES (`+inList(1, 19)+`)`,
		c.ID, c.WorkspaceID, c.Name, c.Description, c.AlgorithmID, c.AlgorithmWorkspaceID, toJSON(c.Args), toJSON(c.ResultConsumers),
		c.Limits.CPUs, c.Limits.MemoryBytes, c.Limits.DiskBytes, c.Limits.MaxDurationSeconds, c.Network, toJSON(c.Labels),
		string(c.Canonical), c.ManifestSHA256, c.CreatedBy, c.CreatedAt.UTC(), c.UpdatedAt.UTC())
	if err != nil {
		return s.db.fail(err, "could not create the computation")
	}
	return s.putDatasets(ctx, c)
}

func (s *ComputationStore) putDatasets(ctx context.Context, c *computation.Computation) error {
	for i, d := range c.Datasets {
		_, err := s.q.ExecContext(ctx, `INSERT INTO computation_datasets (computation_id, position, name, dataset_id, workspace_id) VALUES ($1, $2, $3, $4, $5)`,
			c.ID, i, d.Name, d.DatasetID, d.WorkspaceID)
		if err != nil {
			return s.db.fail(err, "could not save the computation's datasets")
		}
	}
	return nil
}

// FindComputationByID returns a computation with its datasets and
// approvals.
func (s *ComputationStore) FindComputationByID(ctx context.Context, id string) (*computation.Computation, error) {
	c, err := scanComputation(s.q.QueryRowContext(ctx, computationSelect+` WHERE id = $1`, id))
	if err != nil {
		return nil, s.db.one(err, "computation "+id+" not found")
	}
	if err := s.fill(ctx, []*computation.Computation{c}); err != nil {
		return nil, err
	}
	return c, nil
}

// FindComputations lists computations by ID with their datasets and
// approvals.
func (s *ComputationStore) FindComputations(ctx context.Context, f computation.Filter) ([]*computation.Computation, error) {
	if f.IDs != nil && len(f.IDs) == 0 {
		return nil, nil
	}
	query := computationSelect + ` WHERE id > $1 AND ($2 = '' OR workspace_id = $2)`
	args := []any{f.Page.After, f.WorkspaceID}
	if f.IDs != nil {
		query += ` AND id IN (` + inList(len(args)+1, len(f.IDs)) + `)`
		args = append(args, stringArgs(f.IDs)...)
	}
	query += ` ORDER BY id`
	if f.Page.Limit > 0 {
		query += ` LIMIT ` + strconv.Itoa(f.Page.Limit)
	}
	rows, err := s.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.db.fail(err, "could not list computations")
	}
	cs, err := collect(rows, scanComputation)
	if err != nil {
		return nil, err
	}
	return cs, s.fill(ctx, cs)
}

// fill reads the datasets and approvals of cs.
func (s *ComputationStore) fill(ctx context.Context, cs []*computation.Computation) error {
	if len(cs) == 0 {
		return nil
	}
	byID := make(map[string]*computation.Computation, len(cs))
	ids := make([]string, len(cs))
	for i, c := range cs {
		byID[c.ID], ids[i] = c, c.ID
	}
	in := inList(1, len(ids))
	rows, err := s.q.QueryContext(ctx, `SELECT computation_id, name, dataset_id, workspace_id FROM computation_datasets WHERE computation_id IN (`+in+`) ORDER BY computation_id, position`, stringArgs(ids)...)
	if err != nil {
		return s.db.fail(err, "could not read the computations' datasets")
	}
	type dataset struct {
		cid string
		computation.DatasetRef
	}
	ds, err := collect(rows, func(r interface{ Scan(...any) error }) (dataset, error) {
		var d dataset
		err := r.Scan(&d.cid, &d.Name, &d.DatasetID, &d.WorkspaceID)
		return d, err
	})
	if err != nil {
		return err
	}
	for _, d := range ds {
		byID[d.cid].Datasets = append(byID[d.cid].Datasets, d.DatasetRef)
	}
	rows, err = s.q.QueryContext(ctx, `SELECT computation_id, dataset_id, decision, user_id, comment, manifest_sha256, decided_at FROM computation_approvals WHERE computation_id IN (`+in+`) ORDER BY computation_id, dataset_id`, stringArgs(ids)...)
	if err != nil {
		return s.db.fail(err, "could not read the computations' approvals")
	}
	type approval struct {
		cid string
		computation.Approval
	}
	as, err := collect(rows, func(r interface{ Scan(...any) error }) (approval, error) {
		var a approval
		err := r.Scan(&a.cid, &a.DatasetID, &a.Decision, &a.UserID, &a.Comment, &a.ManifestSHA256, &a.At)
		a.At = a.At.UTC()
		return a, err
	})
	if err != nil {
		return err
	}
	for _, a := range as {
		byID[a.cid].Approvals = append(byID[a.cid].Approvals, a.Approval)
	}
	return nil
}

// LockComputation locks the computation row on PostgreSQL.
func (s *ComputationStore) LockComputation(ctx context.Context, id string) error {
	var got string
	err := s.q.QueryRowContext(ctx, `SELECT id FROM computations WHERE id = $1`+s.forUpdate(), id).Scan(&got)
	return s.db.one(err, "computation "+id+" not found")
}

// UpdateComputation writes a computation's definition and manifest, and
// replaces its datasets.
func (s *ComputationStore) UpdateComputation(ctx context.Context, c *computation.Computation) error {
	res, err := s.q.ExecContext(ctx, `UPDATE computations SET name = $2, description = $3, algorithm_id = $4, algorithm_workspace_id = $5,
		args = $6, result_consumers = $7, cpus = $8, memory_bytes = $9, disk_bytes = $10, max_duration_seconds = $11, network = $12,
		labels = $13, manifest = $14, manifest_sha256 = $15, updated_at = $16 WHERE id = $1`,
		c.ID, c.Name, c.Description, c.AlgorithmID, c.AlgorithmWorkspaceID, toJSON(c.Args), toJSON(c.ResultConsumers),
		c.Limits.CPUs, c.Limits.MemoryBytes, c.Limits.DiskBytes, c.Limits.MaxDurationSeconds, c.Network, toJSON(c.Labels),
		string(c.Canonical), c.ManifestSHA256, c.UpdatedAt.UTC())
	if err := s.db.affected(res, err, "computation "+c.ID+" not found"); err != nil {
		return err
	}
	if _, err := s.q.ExecContext(ctx, `DELETE FROM computation_datasets WHERE computation_id = $1`, c.ID); err != nil {
		return s.db.fail(err, "could not save the computation's datasets")
	}
	return s.putDatasets(ctx, c)
}

// DeleteComputation deletes a computation; its datasets, approvals, runs
// and run events cascade.
func (s *ComputationStore) DeleteComputation(ctx context.Context, id string) error {
	res, err := s.q.ExecContext(ctx, `DELETE FROM computations WHERE id = $1`, id)
	return s.db.affected(res, err, "computation "+id+" not found")
}

// PutApproval creates or replaces the decision on one dataset.
func (s *ComputationStore) PutApproval(ctx context.Context, computationID string, a computation.Approval) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO computation_approvals (computation_id, dataset_id, decision, user_id, comment, manifest_sha256, decided_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (computation_id, dataset_id) DO UPDATE SET decision = excluded.decision, user_id = excluded.user_id,
		comment = excluded.comment, manifest_sha256 = excluded.manifest_sha256, decided_at = excluded.decided_at`,
		computationID, a.DatasetID, a.Decision, a.UserID, a.Comment, a.ManifestSHA256, a.At.UTC())
	return s.db.fail(err, "could not save the decision")
}

// DeleteApprovals clears a computation's decisions.
func (s *ComputationStore) DeleteApprovals(ctx context.Context, computationID string) error {
	_, err := s.q.ExecContext(ctx, `DELETE FROM computation_approvals WHERE computation_id = $1`, computationID)
	return s.db.fail(err, "could not clear the decisions")
}

// MissingUsers returns those of ids that name no user.
func (s *ComputationStore) MissingUsers(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.q.QueryContext(ctx, `SELECT id FROM users WHERE id IN (`+inList(1, len(ids))+`)`, stringArgs(ids)...)
	if err != nil {
		return nil, s.db.fail(err, "could not look up users")
	}
	found, err := collect(rows, func(r interface{ Scan(...any) error }) (string, error) {
		var id string
		return id, r.Scan(&id)
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

const runColumns = `id, computation_id, workspace_id, state, reason, message, exit_code, node_id, driver, manifest_sha256,
	cpu_seconds, peak_memory_bytes, result_sha256, result_size, created_by, created_at, updated_at, queue_deadline, started_at, finished_at`

func scanRun(r interface{ Scan(...any) error }) (*computation.Run, error) {
	var (
		run               computation.Run
		exit              sql.NullInt64
		started, finished sql.NullTime
	)
	err := r.Scan(&run.ID, &run.ComputationID, &run.WorkspaceID, &run.State, &run.Reason, &run.Message, &exit, &run.NodeID, &run.Driver,
		&run.ManifestSHA256, &run.CPUSeconds, &run.PeakMemory, &run.ResultSHA256, &run.ResultSize, &run.CreatedBy,
		&run.CreatedAt, &run.UpdatedAt, &run.QueueDeadline, &started, &finished)
	if exit.Valid {
		code := int(exit.Int64)
		run.ExitCode = &code
	}
	run.CreatedAt, run.UpdatedAt, run.QueueDeadline = run.CreatedAt.UTC(), run.UpdatedAt.UTC(), run.QueueDeadline.UTC()
	run.StartedAt, run.FinishedAt = timePtr(started), timePtr(finished)
	return &run, err
}

func nullInt(p *int) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

// CreateRun inserts a run.
func (s *ComputationStore) CreateRun(ctx context.Context, r *computation.Run) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO runs (`+runColumns+`) VALUES (`+inList(1, 20)+`)`,
		r.ID, r.ComputationID, r.WorkspaceID, string(r.State), string(r.Reason), r.Message, nullInt(r.ExitCode), r.NodeID, r.Driver,
		r.ManifestSHA256, r.CPUSeconds, r.PeakMemory, r.ResultSHA256, r.ResultSize, r.CreatedBy,
		r.CreatedAt.UTC(), r.UpdatedAt.UTC(), r.QueueDeadline.UTC(), nullTime(r.StartedAt), nullTime(r.FinishedAt))
	return s.db.fail(err, "could not create the run")
}

// FindRunByID returns a run.
func (s *ComputationStore) FindRunByID(ctx context.Context, id string) (*computation.Run, error) {
	r, err := scanRun(s.q.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = $1`, id))
	return r, s.db.one(err, "run "+id+" not found")
}

// LockRun returns a run, locking its row on PostgreSQL until the
// transaction ends.
func (s *ComputationStore) LockRun(ctx context.Context, id string) (*computation.Run, error) {
	r, err := scanRun(s.q.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = $1`+s.forUpdate(), id))
	return r, s.db.one(err, "run "+id+" not found")
}

// UpdateRun writes a run's mutable fields.
func (s *ComputationStore) UpdateRun(ctx context.Context, r *computation.Run) error {
	res, err := s.q.ExecContext(ctx, `UPDATE runs SET state = $2, reason = $3, message = $4, exit_code = $5, node_id = $6,
		cpu_seconds = $7, peak_memory_bytes = $8, result_sha256 = $9, result_size = $10, updated_at = $11, started_at = $12, finished_at = $13
		WHERE id = $1`,
		r.ID, string(r.State), string(r.Reason), r.Message, nullInt(r.ExitCode), r.NodeID,
		r.CPUSeconds, r.PeakMemory, r.ResultSHA256, r.ResultSize, r.UpdatedAt.UTC(), nullTime(r.StartedAt), nullTime(r.FinishedAt))
	return s.db.affected(res, err, "run "+r.ID+" not found")
}

// runWhere builds the WHERE clause of f and its arguments.
func runWhere(f computation.RunFilter) (string, []any) {
	conds := []string{"id > $1"}
	args := []any{f.Page.After}
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.ComputationID != "" {
		add("computation_id = ?", f.ComputationID)
	}
	if f.WorkspaceID != "" {
		add("workspace_id = ?", f.WorkspaceID)
	}
	if f.NodeID != "" {
		add("node_id = ?", f.NodeID)
	}
	if f.Active {
		conds = append(conds, "state NOT IN ('succeeded', 'failed', 'stopped')")
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// FindRuns lists runs by ID.
func (s *ComputationStore) FindRuns(ctx context.Context, f computation.RunFilter) ([]*computation.Run, error) {
	where, args := runWhere(f)
	query := `SELECT ` + runColumns + ` FROM runs` + where + ` ORDER BY id`
	if f.Page.Limit > 0 {
		query += ` LIMIT ` + strconv.Itoa(f.Page.Limit)
	}
	rows, err := s.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.db.fail(err, "could not list runs")
	}
	return collect(rows, scanRun)
}

// CountRuns counts the runs f selects, ignoring its page.
func (s *ComputationStore) CountRuns(ctx context.Context, f computation.RunFilter) (int, error) {
	f.Page = cove.Page{}
	where, args := runWhere(f)
	var n int
	err := s.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM runs`+where, args...).Scan(&n)
	return n, s.db.fail(err, "could not count runs")
}

// AppendRunEvent stores e as the run's next event. Callers hold the run's
// row lock, so two events cannot take the same number.
func (s *ComputationStore) AppendRunEvent(ctx context.Context, e *computation.RunEvent) error {
	err := s.q.QueryRowContext(ctx, `INSERT INTO run_events (run_id, seq, time, state, reason, message)
		SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM run_events WHERE run_id = $1 RETURNING seq`,
		e.RunID, e.Time.UTC(), string(e.State), string(e.Reason), e.Message).Scan(&e.Seq)
	return s.db.fail(err, "could not record the run event")
}

// FindRunEvents returns a run's events in order.
func (s *ComputationStore) FindRunEvents(ctx context.Context, runID string) ([]*computation.RunEvent, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT run_id, seq, time, state, reason, message FROM run_events WHERE run_id = $1 ORDER BY seq`, runID)
	if err != nil {
		return nil, s.db.fail(err, "could not read the run's events")
	}
	return collect(rows, func(r interface{ Scan(...any) error }) (*computation.RunEvent, error) {
		var e computation.RunEvent
		err := r.Scan(&e.RunID, &e.Seq, &e.Time, &e.State, &e.Reason, &e.Message)
		e.Time = e.Time.UTC()
		return &e, err
	})
}

// RecordAudit appends an audit entry in the store's transaction.
func (s *ComputationStore) RecordAudit(ctx context.Context, e audit.Entry) error {
	return recordAudit(ctx, s.db, s.q, e)
}

// ComputationsUsing counts the computations naming a dataset or an
// algorithm.
func (s *ComputationStore) ComputationsUsing(ctx context.Context, datasetID, algorithmID string) (int, error) {
	var n int
	err := s.q.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM computation_datasets WHERE $1 <> '' AND dataset_id = $1) +
		(SELECT COUNT(*) FROM computations WHERE $2 <> '' AND algorithm_id = $2)`, datasetID, algorithmID).Scan(&n)
	return n, s.db.fail(err, "database error")
}
