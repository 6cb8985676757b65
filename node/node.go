// Package node is the registry of compute nodes: enrollment with one-time
// tokens, approval, draining and removal, and liveness from heartbeats.
//
// A node enrolls with a token an admin made (platform-wide, or owned by a
// workspace, whose node it then is), receives its identity and a NATS
// credential limited to its own subjects, and waits for approval unless
// the token approves it at once. An approved node that heartbeats is given
// to the scheduler; one that falls silent for Config.LostAfter is marked
// lost, taken from the scheduler, and every run on it fails with
// node_lost. Liveness is event driven: each heartbeat resets a timer per
// node; nothing polls.
//
// Who may do what follows authz/model.fga: platform admins manage every
// node and the platform's enrollment tokens; workspace admins manage their
// workspace's nodes and tokens; workspace members see their workspace's
// nodes.
package node

import (
	"context"
	"crypto/x509"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
)

// State is where a node is in its life.
type State string

// The node states.
const (
	Pending  State = "pending"  // enrolled; an admin must approve it
	Active   State = "active"   // approved: takes runs while it heartbeats
	Draining State = "draining" // takes no new runs; those it has finish
	Lost     State = "lost"     // missed its heartbeats; its runs failed
	Revoked  State = "revoked"  // its certificate was revoked: cut off for good
)

// States lists every state.
var States = []State{Pending, Active, Draining, Lost, Revoked}

// Validate checks that s is a state.
func (s State) Validate() error {
	if !slices.Contains(States, s) {
		return cove.Errorf(cove.Invalid, "state %q is not one of pending, active, draining, lost, revoked", s).WithDetails(cove.Detail{Field: "state", Message: "unknown state"})
	}
	return nil
}

// Node is an enrolled compute node.
type Node struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// WorkspaceID is the workspace the node belongs to and serves alone;
	// empty for a platform node, which serves every workspace.
	WorkspaceID string             `json:"workspace_id,omitempty"`
	State       State              `json:"state"`
	Capacity    runproto.Resources `json:"capacity"`
	Drivers     []string           `json:"drivers"`
	Labels      map[string]string  `json:"labels"`
	TEE         string             `json:"tee"`
	Draining    bool               `json:"draining"`
	// EnrollTokenID is the token the node enrolled with.
	EnrollTokenID string     `json:"enroll_token_id"`
	ApprovedAt    *time.Time `json:"approved_at,omitempty"`
	ApprovedBy    string     `json:"approved_by,omitempty"`
	// LastSeenAt is the last heartbeat written to the store; the store is
	// written once per node.lost_after (at most every 15 s), so it may lag
	// by that much. Online is the live view.
	LastSeenAt          *time.Time `json:"last_seen_at,omitempty"`
	LostAt              *time.Time `json:"lost_at,omitempty"`
	CredentialExpiresAt time.Time  `json:"credential_expires_at"`
	// NATSUser is the public key of the node's NATS user. The node made
	// the key and keeps its seed; revoking the key cuts the node off NATS.
	NATSUser string `json:"nats_user"`
	// CertificateSerial is the serial of the node's latest client
	// certificate, which it presents over mTLS.
	CertificateSerial    string     `json:"certificate_serial,omitempty"`
	CertificateExpiresAt *time.Time `json:"certificate_expires_at,omitempty"`
	// RevokedAt is when the node's certificate was revoked: it is refused
	// on HTTP and NATS from then on and may only enroll again as a new node.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`

	// Online, Reserved and Runs are this control plane's live view, not
	// stored: whether the node heartbeated within LostAfter, and what the
	// scheduler has reserved on it for how many runs.
	Online   bool               `json:"online"`
	Reserved runproto.Resources `json:"reserved"`
	Runs     int                `json:"runs"`
}

// state derives the state from the stored facts.
func (n *Node) state() State {
	switch {
	case n.RevokedAt != nil:
		return Revoked
	case n.ApprovedAt == nil:
		return Pending
	case n.LostAt != nil:
		return Lost
	case n.Draining:
		return Draining
	}
	return Active
}

// EnrollToken lets one node enroll, once, before it expires. Its secret is
// shown once, to its creator, and stored only as a digest.
type EnrollToken struct {
	ID string `json:"id"`
	// WorkspaceID is the workspace whose node the enrolling node becomes;
	// empty for a platform token.
	WorkspaceID string `json:"workspace_id,omitempty"`
	// AutoApprove approves the node at enrollment.
	AutoApprove bool       `json:"auto_approve"`
	CreatedBy   string     `json:"created_by"`
	ExpiresAt   time.Time  `json:"expires_at"`
	UsedAt      *time.Time `json:"used_at,omitempty"`
	NodeID      string     `json:"node_id,omitempty"` // the node that used it
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	TokenHash   string     `json:"-"`
}

// CreatedEnrollToken is a new token with its secret, shown only once.
type CreatedEnrollToken struct {
	EnrollToken
	Token string `json:"token"`
}

// Enrollment token lifetimes.
const (
	DefaultEnrollTokenTTL = time.Hour
	MinEnrollTokenTTL     = time.Minute
	MaxEnrollTokenTTL     = 7 * 24 * time.Hour
)

// Filter selects nodes, ordered by ID.
type Filter struct {
	// WorkspaceID selects one workspace's nodes.
	WorkspaceID string
	// IDs, when not nil, selects only these nodes: the ones the caller may
	// see.
	IDs   []string
	State State
	Page  cove.Page
}

// Store persists nodes and enrollment tokens. Methods return not_found for
// a missing row and conflict for a duplicate.
type Store interface {
	// Atomic runs fn in one transaction; fn's Store sees the transaction.
	Atomic(ctx context.Context, fn func(Store) error) error

	CreateNode(ctx context.Context, n *Node) error
	FindNodeByID(ctx context.Context, id string) (*Node, error)
	// FindNodes returns the nodes matching f, by ID, with State set.
	FindNodes(ctx context.Context, f Filter) ([]*Node, error)
	// UpdateNode writes what admins change: approval, draining, the time.
	UpdateNode(ctx context.Context, n *Node) error
	// MarkNodeSeen records a heartbeat: last_seen_at, and lost_at cleared.
	MarkNodeSeen(ctx context.Context, id string, at time.Time) error
	// MarkNodesSeen records heartbeats of many nodes at once: last_seen_at
	// of each listed node, leaving lost_at alone; IDs of nodes that are
	// gone are skipped.
	MarkNodesSeen(ctx context.Context, ids []string, at time.Time) error
	// MarkNodeLost records that the node went silent.
	MarkNodeLost(ctx context.Context, id string, at time.Time) error
	DeleteNode(ctx context.Context, id string) error

	CreateEnrollToken(ctx context.Context, t *EnrollToken) error
	FindEnrollTokenByID(ctx context.Context, id string) (*EnrollToken, error)
	FindEnrollTokenByHash(ctx context.Context, hash string) (*EnrollToken, error)
	// FindEnrollTokens lists the tokens of a workspace ("" for the
	// platform's), by ID.
	FindEnrollTokens(ctx context.Context, workspaceID string, page cove.Page) ([]*EnrollToken, error)
	// UseEnrollToken marks a token used by nodeID if it is unused,
	// unrevoked and unexpired at at; otherwise it returns conflict.
	UseEnrollToken(ctx context.Context, id, nodeID string, at time.Time) error
	// RevokeEnrollToken marks a token revoked.
	RevokeEnrollToken(ctx context.Context, id string, at time.Time) error

	// SetNodeCertificate records a node's new client certificate and the
	// expiry of the NATS credential issued with it.
	SetNodeCertificate(ctx context.Context, id, serial string, certExpires, credExpires time.Time) error
	// MarkNodeRevoked records that a node's certificate was revoked.
	MarkNodeRevoked(ctx context.Context, id string, at time.Time) error

	RecordAudit(ctx context.Context, e audit.Entry) error
}

// Credentials issues and revokes nodes' NATS users; the app adapts
// natsbus.Bus to it.
type Credentials interface {
	// IssueNodeCredential signs a NATS user JWT for the user key user,
	// whose seed the node holds, allowed only nodeID's own subjects and
	// valid until expires. It returns the JWT and the URL nodes dial.
	// Invalid for a malformed key, Unavailable when credentials cannot be
	// issued.
	IssueNodeCredential(nodeID, user string, expires time.Time) (jwt string, natsURL string, err error)
	// RevokeNodeCredential revokes user: its connections close and every
	// JWT issued to it until now is refused.
	RevokeNodeCredential(user string) error
}

// Certificates issues nodes their client certificates; the app adapts the
// certificate authority (package ca) to it.
type Certificates interface {
	// IssueNodeCertificate signs csrPEM (a PEM certificate request) for
	// nodeID. Invalid for a malformed request or a weak key.
	IssueNodeCertificate(ctx context.Context, nodeID, csrPEM string) (*Certificate, error)
	// RenewNodeCertificate signs csrPEM for the node that presented
	// current over mTLS. Forbidden when the request names another node.
	RenewNodeCertificate(ctx context.Context, nodeID string, current *x509.Certificate, csrPEM string) (*Certificate, error)
}

// Certificate is a node's client certificate as the registry hands it out.
type Certificate struct {
	Serial   string
	PEM      string // the certificate
	ChainPEM string // the intermediate and root that verify it
	NotAfter time.Time
}

// Runs is the run store as the node registry uses it; the computation
// service satisfies it.
type Runs interface {
	// FindRunsOnNode returns the active runs placed on the node.
	FindRunsOnNode(ctx context.Context, nodeID string) ([]*computation.Run, error)
	// Advance moves a run to a state. Conflict when the run cannot make
	// the move (it ended meanwhile); not_found when it does not exist.
	Advance(ctx context.Context, id string, to computation.State, u computation.RunUpdate) (*computation.Run, error)
}

// Config tunes the registry. Zero fields take the defaults.
type Config struct {
	// LostAfter is how long a node may stay silent before it is lost.
	// Default 15 s.
	LostAfter time.Duration
	// HeartbeatInterval is how often enrolling nodes are told to
	// heartbeat. Default runproto.NodeHeartbeatInterval.
	HeartbeatInterval time.Duration
	// Log receives what goes wrong where no caller would see it: marking a
	// node lost, failing its runs. Nil discards.
	Log *slog.Logger
}

// Defaults of Config.
const (
	DefaultLostAfter = 15 * time.Second
)

// Limits of what a node may declare.
const (
	MaxNameLen    = 63
	MaxLabels     = 32
	MaxLabelLen   = 63
	MaxCPUs       = 4096
	DriverWasm    = "wasm"
	DriverProcess = "process"
)

// Drivers lists the drivers a node may offer.
var Drivers = []string{DriverWasm, DriverProcess}

// TEEs lists the TEE kinds a node may offer.
var TEEs = []string{"none", "vtpm", "sev-snp", "tdx"}

func invalid(field, format string, args ...any) error {
	e := cove.Errorf(cove.Invalid, format, args...)
	return e.WithDetails(cove.Detail{Field: field, Message: e.Message})
}

// ValidateEnrollment checks what a node declares and returns it normalized:
// drivers sorted and unique, labels never nil, TEE "none" when empty.
func ValidateEnrollment(r runproto.EnrollRequest) (runproto.EnrollRequest, error) {
	if !validName(r.Name) {
		return r, invalid("name", "the node name must be 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit", MaxNameLen)
	}
	c := r.Capacity
	switch {
	case math.IsNaN(c.CPUs) || c.CPUs < 0.001 || c.CPUs > MaxCPUs:
		return r, invalid("capacity.cpus", "the node's CPUs must be from 0.001 to %d", MaxCPUs)
	case c.MemoryBytes <= 0:
		return r, invalid("capacity.memory_bytes", "the node's memory must be positive")
	case c.DiskBytes < 0:
		return r, invalid("capacity.disk_bytes", "the node's disk must not be negative")
	}
	if len(r.Drivers) == 0 {
		return r, invalid("drivers", "the node must offer a driver: %s", strings.Join(Drivers, " or "))
	}
	drivers := slices.Clone(r.Drivers)
	for _, d := range drivers {
		if !slices.Contains(Drivers, d) {
			return r, invalid("drivers", "driver %q is not one of %s", d, strings.Join(Drivers, ", "))
		}
	}
	slices.Sort(drivers)
	r.Drivers = slices.Compact(drivers)
	if len(r.Labels) > MaxLabels {
		return r, invalid("labels", "a node may have at most %d labels", MaxLabels)
	}
	labels := make(map[string]string, len(r.Labels))
	for k, v := range r.Labels {
		if !validLabel(k, false) {
			return r, invalid("labels", "label key %q must be 1 to %d letters, digits, '.', '_', '/' or '-', starting with a letter or digit", k, MaxLabelLen)
		}
		if !validLabel(v, true) {
			return r, invalid("labels", "the value of label %q must be at most %d letters, digits, '.', '_' or '-'", k, MaxLabelLen)
		}
		labels[k] = v
	}
	r.Labels = labels
	if r.TEE == "" {
		r.TEE = "none"
	}
	if !slices.Contains(TEEs, r.TEE) {
		return r, invalid("tee", "TEE %q is not one of %s", r.TEE, strings.Join(TEEs, ", "))
	}
	if !strings.Contains(r.CSR, "-----BEGIN CERTIFICATE REQUEST-----") {
		return r, invalid("csr", "send a PEM certificate request (CERTIFICATE REQUEST) signed by the node's key")
	}
	if !validUserKey(r.NATSUser) {
		return r, invalid("nats_user", "nats_user must be the public key of a NATS user nkey (56 characters starting with U)")
	}
	return r, nil
}

// validUserKey checks the shape of a NATS user public key; the bus checks
// its checksum when it signs the JWT.
func validUserKey(k string) bool {
	if len(k) != 56 || k[0] != 'U' {
		return false
	}
	for i := range len(k) {
		if c := k[i]; !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen || !alnum(s[0]) {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !alnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// validLabel checks a label key, or a value when value is set (which may
// be empty and has no '/').
func validLabel(s string, value bool) bool {
	if len(s) > MaxLabelLen || !value && (s == "" || !alnum(s[0])) {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !alnum(c) && c != '.' && c != '_' && c != '-' && (value || c != '/') {
			return false
		}
	}
	return true
}
