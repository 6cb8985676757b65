// Package runproto is the protocol between the control plane, compute nodes
// and agents over NATS: the messages, the headers that tell request kinds
// apart, and the timing constants. The subjects are built in
// natsbus/subjects.go; docs/protocol.md walks through a run.
//
// Bulk bytes (input chunks, result chunks) travel as raw message bodies,
// never inside JSON; everything else is JSON.
package runproto

import (
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/sandbox"
)

// Headers.
const (
	// HeaderOp names the operation of a request on a subject that carries
	// several: OpAttest and OpChunk on RunInputs, OpBegin, OpChunk and
	// OpCommit on RunResults.
	HeaderOp = "Cove-Op"
	// HeaderErrorCode and HeaderErrorMessage carry a cove.Error on a reply
	// whose body is raw bytes, and on any reply that failed.
	HeaderErrorCode    = "Cove-Error-Code"
	HeaderErrorMessage = "Cove-Error-Message"
	// HeaderSHA256, HeaderOffset and HeaderSeq qualify chunk requests.
	HeaderSHA256 = "Cove-Sha256"
	HeaderOffset = "Cove-Offset"
	HeaderSeq    = "Cove-Seq"
)

// Operations.
const (
	OpAttest = "attest"
	OpChunk  = "chunk"
	OpBegin  = "begin"
	OpCommit = "commit"
)

// Timing.
const (
	// NodeHeartbeatInterval is how often nodes heartbeat by default; the
	// control plane tells each node its own at enrollment
	// (node.heartbeat_interval) and marks a node lost after
	// node.lost_after (default 15 s: three missed heartbeats) without one.
	NodeHeartbeatInterval = 5 * time.Second
	// AgentHeartbeatInterval is how often agents heartbeat; a run whose
	// agent is silent for AgentLostAfter fails with agent_lost.
	AgentHeartbeatInterval = time.Second
	AgentLostAfter         = 10 * time.Second
	// ChunkSize is the size of input and result chunks: under NATS's
	// default 1 MiB payload limit with room for headers.
	ChunkSize = 512 << 10
)

// Error is the JSON form of a cove.Error inside a reply.
type Error struct {
	Code    cove.Code `json:"code"`
	Message string    `json:"message"`
}

// Err turns e back into a *cove.Error, or nil.
func (e *Error) Err() error {
	if e == nil {
		return nil
	}
	return cove.Errorf(e.Code, "%s", e.Message)
}

// ErrorOf returns the reply form of err, or nil.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	return &Error{Code: cove.ErrorCode(err), Message: cove.ErrorMessage(err)}
}

// Resources are amounts of compute.
type Resources struct {
	CPUs        float64 `json:"cpus"`
	MemoryBytes int64   `json:"memory_bytes"`
	DiskBytes   int64   `json:"disk_bytes"`
}

// Heartbeat is what a node publishes on NodeHeartbeat every heartbeat
// interval (EnrollReply.HeartbeatMillis).
type Heartbeat struct {
	NodeID   string    `json:"node_id"`
	Time     time.Time `json:"time"`
	Capacity Resources `json:"capacity"` // total
	Running  []string  `json:"running"`  // IDs of the runs whose sandboxes exist
	Drivers  []string  `json:"drivers"`  // drivers available now
}

// Command is a request from the control plane to a node on NodeControl.
// Exactly one field is set. The node answers with a Reply.
type Command struct {
	Start     *Start     `json:"start,omitempty"`
	Stop      *Stop      `json:"stop,omitempty"`
	Reconcile *Reconcile `json:"reconcile,omitempty"`
}

// Start asks a node to start a sandbox for a run. The agent gets exactly
// three things: the NATS URL, a credential allowed only the run's own
// subjects, and the run ID; the rest it fetches itself.
type Start struct {
	RunID   string         `json:"run_id"`
	Driver  string         `json:"driver"`
	Limits  sandbox.Limits `json:"limits"`
	NATSURL string         `json:"nats_url"`
	Creds   string         `json:"creds"` // NATS creds file content: user JWT and seed
}

// Stop asks a node to stop a run's sandbox.
type Stop struct {
	RunID  string `json:"run_id"`
	Reason string `json:"reason"`
}

// Reconcile tells a node which of the runs it reported running are not
// active: Stale, whose sandboxes the node kills. Active lists the runs
// active on the node when the control plane looked. A Reconcile without
// Stale (from a control plane that predates it) kills every sandbox not in
// Active, which also kills a run started after the control plane looked.
type Reconcile struct {
	Active []string `json:"active"`
	Stale  []string `json:"stale,omitempty"`
}

// Reply answers a Command or a JSON request, a LogBatch among them.
type Reply struct {
	Error *Error `json:"error,omitempty"`
}

// ManifestReply answers an agent's request on RunManifest.
type ManifestReply struct {
	Manifest []byte `json:"manifest"` // canonical JSON, exactly as hashed
	SHA256   string `json:"sha256"`
	Nonce    string `json:"nonce"` // hex; bound into the attestation report data
	Error    *Error `json:"error,omitempty"`
}

// Evidence is an agent's attestation, sent with OpAttest on RunInputs.
// ReportData is hex SHA-512(manifest SHA-256 bytes || agent public key
// bytes || nonce bytes); the control plane recomputes it and refuses
// evidence whose report data is empty or different.
type Evidence struct {
	Kind       string `json:"kind"` // "none", "vtpm", "sev-snp", "tdx"
	PublicKey  string `json:"public_key"`
	ReportData string `json:"report_data"`
	Report     []byte `json:"report,omitempty"` // the TEE's signed report; empty for "none"
}

// Input is one blob the agent must fetch: the algorithm or a dataset.
type Input struct {
	Name     string `json:"name"`   // dataset directory name, or "algorithm"
	Format   string `json:"format"` // "file" or "tar"
	FileName string `json:"file_name"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
}

// InputsReply answers OpAttest: what to fetch, once the evidence passed.
type InputsReply struct {
	Algorithm Input   `json:"algorithm"`
	Datasets  []Input `json:"datasets"`
	Error     *Error  `json:"error,omitempty"`
}

// Event is what an agent publishes on RunEvents: a state it reached, or a
// final report. Seq starts at 1 and increases by one per event of the run.
type Event struct {
	Seq        int64     `json:"seq"`
	Time       time.Time `json:"time"`
	State      string    `json:"state"`            // a computation.State
	Reason     string    `json:"reason,omitempty"` // a computation.Reason, on failed and stopped
	Message    string    `json:"message,omitempty"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	CPUTime    float64   `json:"cpu_seconds,omitempty"`
	PeakMemory int64     `json:"peak_memory_bytes,omitempty"`
	LogLines   int64     `json:"log_lines,omitempty"` // on the last event: lines the control plane acknowledged
}

// LogBatch is a batch of log lines an agent sends as a request on RunLogs;
// the control plane answers a Reply once it has stored the batch, and an
// agent sends a batch that got no answer, or an unavailable one, again,
// unchanged. The lines are numbered one after the other; the first names
// the batch, so a batch sent twice is stored once. Batching keeps a chatty
// algorithm from costing one message per line.
type LogBatch struct {
	Lines []LogLine `json:"lines"`
}

// LogLine is one line the algorithm wrote.
type LogLine struct {
	Seq    int64     `json:"seq"` // 1, 2, ... per run, across both streams
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Text   string    `json:"text"`   // valid UTF-8; invalid bytes replaced
}

// ResultBegin opens a result upload (OpBegin on RunResults).
type ResultBegin struct {
	// Recipients the result is sealed to, so the control plane can check
	// they are exactly the manifest's result consumers.
	Recipients []string `json:"recipients"`
}

// ResultCommit closes a result upload (OpCommit on RunResults): the
// control plane stores the chunks only if they hash to SHA256.
type ResultCommit struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Files  int    `json:"files"`
}

// EnrollRequest is what `cove node` sends to POST /api/v1/nodes/enroll
// with a one-time enrollment token. The node makes its keys itself and
// sends only their public halves: a certificate request for its mTLS
// client certificate and the public key of its NATS user.
type EnrollRequest struct {
	Token    string            `json:"token"`
	Name     string            `json:"name"`
	Capacity Resources         `json:"capacity"`
	Drivers  []string          `json:"drivers"`
	Labels   map[string]string `json:"labels"`
	TEE      string            `json:"tee"` // "none", "vtpm", "sev-snp", "tdx"
	// CSR is a PEM certificate request signed by the node's key; its
	// subject is ignored, the certificate names the node's ID.
	CSR string `json:"csr"`
	// NATSUser is the public key (U...) of the node's NATS user nkey.
	NATSUser string `json:"nats_user"`
}

// EnrollReply gives an enrolled node its identity, its client certificate
// and its NATS user JWT, allowed only the node's own subjects.
type EnrollReply struct {
	NodeID  string `json:"node_id"`
	NATSURL string `json:"nats_url"`
	// HeartbeatMillis is how often the node heartbeats, in milliseconds;
	// 0 means NodeHeartbeatInterval.
	HeartbeatMillis int64 `json:"heartbeat_ms,omitempty"`
	NodeCredential
}

// NodeCredential is what a node authenticates with, as enrollment and
// renewal hand it out: both expire together.
type NodeCredential struct {
	// Certificate is the node's client certificate (PEM) and Chain the
	// intermediate and root CA certificates that verify it.
	Certificate string `json:"certificate"`
	Chain       string `json:"chain"`
	// JWT is the node's NATS user JWT, for the nkey the node holds.
	JWT string `json:"jwt"`
	// Expires is when the certificate and the JWT expire; the node renews
	// both at two thirds of their lifetime.
	Expires time.Time `json:"expires"`
}

// RenewRequest is what a node sends to POST /api/v1/nodes/self/renew,
// authenticated with its current certificate over mTLS.
type RenewRequest struct {
	// CSR is a PEM certificate request for the node's (possibly new) key.
	CSR string `json:"csr"`
}
