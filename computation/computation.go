package computation

import (
	"context"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/age"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
)

// Computation is an algorithm put together with datasets, result consumers
// and limits, owned by the workspace it was created in. Its manifest pins
// every part by digest; once it has run (Frozen) it can no longer change,
// so every run of it runs the same manifest.
type Computation struct {
	ID          string `json:"id"`
	WorkspaceID string `json:"workspace_id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	AlgorithmID string `json:"algorithm_id"`
	// AlgorithmWorkspaceID is the workspace that publishes the algorithm;
	// its members are the computation's algorithm providers.
	AlgorithmWorkspaceID string            `json:"algorithm_workspace_id"`
	Args                 []string          `json:"args"`
	Datasets             []DatasetRef      `json:"datasets"`
	ResultConsumers      []ResultConsumer  `json:"result_consumers"`
	Limits               Limits            `json:"limits"`
	Network              bool              `json:"network"`
	Labels               map[string]string `json:"labels,omitempty"`
	// Manifest is what the computation runs; ManifestSHA256 is the SHA-256
	// of its canonical form (Manifest.Canonical), which every participant
	// sees and the agent's attestation is bound to.
	Manifest       *Manifest `json:"manifest"`
	ManifestSHA256 string    `json:"manifest_sha256"`
	// Canonical is the manifest exactly as hashed.
	Canonical []byte `json:"-"`
	// Approvals are the dataset providers' decisions on this manifest.
	Approvals []Approval `json:"approvals"`
	// Frozen is true once it has a run; a frozen computation cannot change.
	Frozen    bool      `json:"frozen"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// DatasetRef is one dataset of a computation. Name is the directory it
// appears under in the sandbox, /cove/inputs/<name>/.
type DatasetRef struct {
	Name      string `json:"name"`
	DatasetID string `json:"dataset_id"`
	// WorkspaceID is the workspace that publishes the dataset; its admins
	// are the dataset's providers. It is filled in by the service.
	WorkspaceID string `json:"workspace_id,omitempty" jsonschema:"readOnly=true"`
}

// Spec is what a user gives to create or update a computation. Zero
// limits take their defaults.
type Spec struct {
	// Name defaults to the algorithm's name.
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	AlgorithmID string `json:"algorithm_id"`
	// Args are passed to the algorithm after its own entry arguments.
	Args            []string          `json:"args,omitempty"`
	Datasets        []DatasetRef      `json:"datasets"`
	ResultConsumers []ResultConsumer  `json:"result_consumers"`
	Limits          Limits            `json:"limits"`
	Network         bool              `json:"network,omitempty"`
	Labels          map[string]string `json:"labels,omitempty" jsonschema:"description=labels the node that runs it must carry"`
}

// Decisions of a dataset provider.
const (
	Approved = "approved"
	Rejected = "rejected"
)

// Approval is a dataset provider's decision on one dataset of a
// computation, for one manifest: changing the computation clears it.
type Approval struct {
	DatasetID      string    `json:"dataset_id"`
	Decision       string    `json:"decision" jsonschema:"enum=approved,enum=rejected"`
	UserID         string    `json:"user_id"`
	Comment        string    `json:"comment,omitempty"`
	ManifestSHA256 string    `json:"manifest_sha256"`
	At             time.Time `json:"at"`
}

// Decision approves or rejects a computation's datasets. An empty
// DatasetID means every dataset of the computation the caller provides.
type Decision struct {
	DatasetID string `json:"dataset_id,omitempty"`
	Comment   string `json:"comment,omitempty"`
}

// Limit bounds. Defaults apply to zero fields of a Spec's limits.
const (
	DefaultCPUs               = 1.0
	DefaultMemoryBytes        = 512 << 20
	DefaultDiskBytes          = 1 << 30
	DefaultMaxDurationSeconds = 3600

	MinCPUs               = 0.1
	MaxCPUs               = 64.0
	MinMemoryBytes        = 16 << 20
	MaxMemoryBytes        = 256 << 30
	MinDiskBytes          = 1 << 20
	MaxDiskBytes          = 1 << 40
	MaxMaxDurationSeconds = 7 * 24 * 3600
)

// Bounds on the parts of a computation.
const (
	MaxNameLen        = 100
	MaxDescriptionLen = 2000
	MaxDatasets       = 64
	MaxConsumers      = 32
	MaxArgs           = 64
	MaxArgLen         = 4096
	MaxLabels         = 32
	MaxCommentLen     = 500
)

// DefaultQueueTimeout is how long a run waits for a node before it fails
// with no_capacity, unless Service.QueueTimeout says otherwise.
const DefaultQueueTimeout = 5 * time.Minute

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.CPUs == 0 {
		l.CPUs = DefaultCPUs
	}
	if l.MemoryBytes == 0 {
		l.MemoryBytes = DefaultMemoryBytes
	}
	if l.DiskBytes == 0 {
		l.DiskBytes = DefaultDiskBytes
	}
	if l.MaxDurationSeconds == 0 {
		l.MaxDurationSeconds = DefaultMaxDurationSeconds
	}
	return l
}

// problems collects the details of an Invalid error, so that a request
// with several mistakes hears of all of them at once.
type problems []cove.Detail

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, cove.Detail{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err(what string) error {
	if len(ps) == 0 {
		return nil
	}
	msg := fmt.Sprintf("the %s has %d problem(s): %s", what, len(ps), ps[0].Message)
	if len(ps) == 1 {
		msg = fmt.Sprintf("the %s is not valid: %s", what, ps[0].Message)
	}
	return cove.Errorf(cove.Invalid, "%s", msg).WithDetails(ps...)
}

func (l Limits) check(ps *problems) {
	if l.CPUs < MinCPUs || l.CPUs > MaxCPUs {
		ps.add("limits.cpus", "cpus must be from %g to %g", MinCPUs, MaxCPUs)
	}
	if l.MemoryBytes < MinMemoryBytes || l.MemoryBytes > MaxMemoryBytes {
		ps.add("limits.memory_bytes", "memory must be from %d MiB to %d GiB", MinMemoryBytes>>20, MaxMemoryBytes>>30)
	}
	if l.DiskBytes < MinDiskBytes || l.DiskBytes > MaxDiskBytes {
		ps.add("limits.disk_bytes", "disk must be from %d MiB to %d TiB", MinDiskBytes>>20, MaxDiskBytes>>40)
	}
	if l.MaxDurationSeconds < 1 || l.MaxDurationSeconds > MaxMaxDurationSeconds {
		ps.add("limits.max_duration_seconds", "max duration must be from 1 second to %d days", MaxMaxDurationSeconds/86400)
	}
}

// Validate checks l, after defaults, against the bounds.
func (l Limits) Validate() error {
	var ps problems
	l.check(&ps)
	return ps.err("limits")
}

// datasetName is the shape of a sandbox directory name.
var datasetName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// labelKey is the shape of a node label key.
var labelKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$`)

// ValidRecipient reports why recipient is not an age X25519 recipient
// ("age1..."), or nil.
func ValidRecipient(recipient string) error {
	if _, err := age.ParseX25519Recipient(recipient); err != nil {
		return cove.Errorf(cove.Invalid, "%q is not an age X25519 recipient (age1...)", clip(recipient, 80))
	}
	return nil
}

// normalize returns s with defaults applied and empty slices made empty
// rather than nil, so equal specs encode equally.
func (s Spec) normalize() Spec {
	s.Limits = s.Limits.WithDefaults()
	if s.Args == nil {
		s.Args = []string{}
	}
	if s.Datasets == nil {
		s.Datasets = []DatasetRef{}
	}
	if s.ResultConsumers == nil {
		s.ResultConsumers = []ResultConsumer{}
	}
	if len(s.Labels) == 0 {
		s.Labels = nil
	}
	ds := make([]DatasetRef, len(s.Datasets))
	for i, d := range s.Datasets {
		ds[i] = DatasetRef{Name: d.Name, DatasetID: d.DatasetID}
	}
	s.Datasets = ds
	return s
}

// Validate checks the shape of s, after defaults: everything that can be
// told without the catalog. A result consumer may come without a key yet;
// a dry run reports it until one is set.
func (s Spec) Validate() error {
	s = s.normalize()
	var ps problems
	if s.Name != "" {
		if err := identity.ValidateName("name", s.Name, MaxNameLen); err != nil {
			ps = append(ps, cove.ErrorDetails(err)...)
		}
	}
	if utf8.RuneCountInString(s.Description) > MaxDescriptionLen || !utf8.ValidString(s.Description) {
		ps.add("description", "the description must be valid UTF-8 of at most %d characters", MaxDescriptionLen)
	}
	if s.AlgorithmID == "" {
		ps.add("algorithm_id", "an algorithm is required")
	}
	if len(s.Args) > MaxArgs {
		ps.add("args", "at most %d arguments", MaxArgs)
	}
	for i, a := range s.Args {
		if len(a) > MaxArgLen || !utf8.ValidString(a) || strings.ContainsRune(a, 0) {
			ps.add(fmt.Sprintf("args[%d]", i), "an argument must be valid UTF-8 of at most %d bytes without NUL", MaxArgLen)
		}
	}
	switch {
	case len(s.Datasets) == 0:
		ps.add("datasets", "at least one dataset is required")
	case len(s.Datasets) > MaxDatasets:
		ps.add("datasets", "at most %d datasets", MaxDatasets)
	}
	names, ids := map[string]bool{}, map[string]bool{}
	for i, d := range s.Datasets {
		f := fmt.Sprintf("datasets[%d]", i)
		if !datasetName.MatchString(d.Name) {
			ps.add(f+".name", "dataset name %q must be 1 to 64 of a-z, 0-9, _ and -; it names the directory /cove/inputs/<name>", clip(d.Name, 80))
		} else if names[d.Name] {
			ps.add(f+".name", "dataset name %q is used twice", d.Name)
		}
		names[d.Name] = true
		if d.DatasetID == "" {
			ps.add(f+".dataset_id", "a dataset ID is required")
		} else if ids[d.DatasetID] {
			ps.add(f+".dataset_id", "dataset %s is named twice", clip(d.DatasetID, 80))
		}
		ids[d.DatasetID] = true
	}
	if len(s.ResultConsumers) > MaxConsumers {
		ps.add("result_consumers", "at most %d result consumers", MaxConsumers)
	}
	users := map[string]bool{}
	for i, rc := range s.ResultConsumers {
		f := fmt.Sprintf("result_consumers[%d]", i)
		if !cove.ValidID("usr", rc.UserID) {
			ps.add(f+".user_id", "%q is not a user ID (usr_...)", clip(rc.UserID, 80))
		} else if users[rc.UserID] {
			ps.add(f+".user_id", "user %s is a result consumer twice", rc.UserID)
		}
		users[rc.UserID] = true
		if rc.Recipient != "" {
			if err := ValidRecipient(rc.Recipient); err != nil {
				ps.add(f+".recipient", "%s", cove.ErrorMessage(err))
			}
		}
	}
	s.Limits.check(&ps)
	if len(s.Labels) > MaxLabels {
		ps.add("labels", "at most %d labels", MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		v := s.Labels[k]
		if !labelKey.MatchString(k) {
			ps.add("labels", "label key %q must be 1 to 63 of A-Z, a-z, 0-9, _ . / - starting with a letter or digit", clip(k, 80))
		}
		if len(v) > 253 || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			ps.add("labels", "label %q has a value longer than 253 bytes or with control characters", clip(k, 80))
		}
	}
	return ps.err("computation")
}

// clip shortens s for an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Blocker is one reason a computation cannot run now.
type Blocker struct {
	// Kind is permission, catalog, policy, approval, consumer or placement.
	Kind string `json:"kind" jsonschema:"enum=permission,enum=catalog,enum=policy,enum=approval,enum=consumer,enum=placement"`
	// DatasetID names the dataset the blocker is about, if any.
	DatasetID string `json:"dataset_id,omitempty"`
	// UserID names the result consumer the blocker is about, if any.
	UserID  string `json:"user_id,omitempty"`
	Message string `json:"message"`
}

// Blocker kinds.
const (
	BlockPermission = "permission" // the caller may not run it
	BlockCatalog    = "catalog"    // the algorithm or a dataset is gone, hidden or changed
	BlockPolicy     = "policy"     // a dataset's compute policy forbids it
	BlockApproval   = "approval"   // a dataset provider has not approved, or rejected
	BlockConsumer   = "consumer"   // result consumers missing or without a valid key
	BlockPlacement  = "placement"  // no node could run it
)

// DryRun is the answer of a dry run: every blocker at once.
type DryRun struct {
	ComputationID  string    `json:"computation_id"`
	ManifestSHA256 string    `json:"manifest_sha256"`
	Runnable       bool      `json:"runnable"`
	Blockers       []Blocker `json:"blockers"`
}

// Filter selects computations. Page.Limit 0 means no limit.
type Filter struct {
	IDs         []string // only these, when not nil
	WorkspaceID string
	Page        cove.Page
}

// RunFilter selects runs, ordered by ID. Page.Limit 0 means no limit.
type RunFilter struct {
	ComputationID string
	WorkspaceID   string
	NodeID        string
	Active        bool // only runs in a state that is not terminal
	Page          cove.Page
}

// Store persists computations, runs, run events and approvals. Methods
// return NotFound for a missing row and Conflict for a duplicate.
type Store interface {
	// Atomic runs fn in one transaction; fn's Store sees the transaction.
	Atomic(ctx context.Context, fn func(Store) error) error

	// CreateComputation inserts c with its datasets (not its approvals).
	CreateComputation(ctx context.Context, c *Computation) error
	// FindComputationByID returns a computation with its approvals.
	FindComputationByID(ctx context.Context, id string) (*Computation, error)
	// FindComputations lists computations with their approvals by ID.
	FindComputations(ctx context.Context, f Filter) ([]*Computation, error)
	// LockComputation locks the computation row until the transaction ends
	// (a no-op where transactions are already serialized).
	LockComputation(ctx context.Context, id string) error
	// UpdateComputation writes c's definition and manifest: every field
	// but ID, WorkspaceID, CreatedBy, CreatedAt, Approvals and Frozen,
	// which follows from the runs.
	UpdateComputation(ctx context.Context, c *Computation) error
	// DeleteComputation deletes a computation with its runs and approvals.
	DeleteComputation(ctx context.Context, id string) error

	// PutApproval creates or replaces the decision on one dataset.
	PutApproval(ctx context.Context, computationID string, a Approval) error
	// DeleteApprovals clears every decision on a computation.
	DeleteApprovals(ctx context.Context, computationID string) error

	// MissingUsers returns those of ids that name no user.
	MissingUsers(ctx context.Context, ids []string) ([]string, error)

	// ComputationsUsing counts the computations that name a dataset (as
	// one of their datasets) or an algorithm; pass "" for the other.
	ComputationsUsing(ctx context.Context, datasetID, algorithmID string) (int, error)

	CreateRun(ctx context.Context, r *Run) error
	FindRunByID(ctx context.Context, id string) (*Run, error)
	// LockRun returns a run and locks its row until the transaction ends.
	LockRun(ctx context.Context, id string) (*Run, error)
	// UpdateRun writes the mutable fields of r: state, reason, message,
	// exit code, node, usage, result, times.
	UpdateRun(ctx context.Context, r *Run) error
	FindRuns(ctx context.Context, f RunFilter) ([]*Run, error)
	CountRuns(ctx context.Context, f RunFilter) (int, error)
	// AppendRunEvent stores e with the run's next sequence number, which it
	// sets in e.Seq.
	AppendRunEvent(ctx context.Context, e *RunEvent) error
	FindRunEvents(ctx context.Context, runID string) ([]*RunEvent, error)

	RecordAudit(ctx context.Context, e audit.Entry) error
}

// Catalog gives the computation service the catalog entries a principal
// may use; the catalog service implements it. Both methods return NotFound
// for an entry p may not see and Forbidden for one p sees but may not use.
type Catalog interface {
	UseAlgorithm(ctx context.Context, p cove.Principal, id string) (*catalog.Algorithm, error)
	UseDataset(ctx context.Context, p cove.Principal, id string) (*catalog.Dataset, error)
}

// Scheduler places runs on nodes.
type Scheduler interface {
	// Enqueue queues a run for placement. Unavailable when it cannot.
	Enqueue(ctx context.Context, r scheduler.Request) error
	// Release frees whatever the run holds or waits for; releasing a run
	// that holds nothing is no error.
	Release(ctx context.Context, runID string)
	// Blockers lists, in words, why no node could ever run r; empty when
	// some node could.
	Blockers(r scheduler.Request) []string
}

// Stopper tells the node running a run to stop it; dispatch implements it.
type Stopper interface {
	// StopRun asks the run's node to stop its sandbox. Unavailable when
	// the node cannot be reached.
	StopRun(ctx context.Context, run *Run) error
}

// LogReader reads a run's log lines; dispatch implements it over
// JetStream.
type LogReader interface {
	// ReadLogs calls fn with every line whose Seq is above afterSeq, in
	// order. Without follow it returns after the lines that exist; with
	// follow it blocks for new lines until the run's last line has been
	// delivered or ctx ends. An error from fn ends it with that error.
	ReadLogs(ctx context.Context, runID string, afterSeq int64, follow bool, fn func(runproto.LogLine) error) error
}

// ResultBlobs opens sealed results by digest.
type ResultBlobs interface {
	// Open returns the blob and its size; NotFound when it is not stored.
	Open(ctx context.Context, sha256 string) (io.ReadCloser, int64, error)
}
