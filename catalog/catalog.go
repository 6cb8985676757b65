// Package catalog holds what can be computed on and with: datasets and
// algorithms, their visibility, and each dataset's compute policy.
//
// Content lives in the blob store, addressed by SHA-256; the catalog keeps
// the metadata and the digest, and an entry exists only once its content is
// stored, so an upload cut off halfway leaves nothing registered.
package catalog

import (
	"time"
)

// Visibility says who beyond the owning workspace may see an entry.
type Visibility string

// Visibilities.
const (
	Public     Visibility = "public"     // every signed-in user
	Private    Visibility = "private"    // the owning workspace only
	Restricted Visibility = "restricted" // the owning workspace and the workspaces listed in SharedWith
)

// TEE is a kind of trusted execution environment a policy may require.
type TEE string

// TEE kinds. None means no requirement; Any means any real TEE.
const (
	TEENone   TEE = "none"
	TEEAny    TEE = "any"
	TEEVTPM   TEE = "vtpm"
	TEESEVSNP TEE = "sev-snp"
	TEETDX    TEE = "tdx"
)

// Algorithm kinds.
const (
	KindWasm   = "wasm"
	KindBin    = "bin"
	KindPython = "python"
)

// Dataset formats: one file, or a directory stored as a deterministic tar
// (blob.WriteTar) and unpacked into the sandbox.
const (
	FormatFile = "file"
	FormatTar  = "tar"
)

// Policy is a dataset owner's rules for computing on it. The zero Policy
// allows nothing to run: an owner opts algorithms in.
type Policy struct {
	// AllowedAlgorithms lists algorithm SHA-256 digests that may run.
	AllowedAlgorithms []string `json:"allowed_algorithms"`
	// AllowedPublishers lists workspace IDs whose algorithms may run.
	AllowedPublishers []string `json:"allowed_publishers"`
	// AllowAnyAlgorithm lets any algorithm run.
	AllowAnyAlgorithm bool `json:"allow_any_algorithm"`
	// AllowNetwork gives the sandbox network access; off by default.
	AllowNetwork bool `json:"allow_network"`
	// RequiredTEE is the TEE kind runs must attest to.
	RequiredTEE TEE `json:"required_tee"`
	// ApprovalRequired makes every computation wait for the owner's approval.
	ApprovalRequired bool `json:"approval_required"`
	// MaxDurationSeconds caps a run's duration; 0 means no cap beyond the
	// computation's own.
	MaxDurationSeconds int64 `json:"max_duration_seconds"`
	// PricePerRun and PricePerCPUSecond are in micro-credits; stored now,
	// charged by billing later.
	PricePerRun       int64 `json:"price_per_run"`
	PricePerCPUSecond int64 `json:"price_per_cpu_second"`
}

// Dataset is data offered for computation.
type Dataset struct {
	ID          string     `json:"id"`
	WorkspaceID string     `json:"workspace_id"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Format      string     `json:"format"`    // FormatFile or FormatTar
	FileName    string     `json:"file_name"` // the file's name for FormatFile
	SHA256      string     `json:"sha256"`
	Size        int64      `json:"size"`
	Visibility  Visibility `json:"visibility"`
	SharedWith  []string   `json:"shared_with"` // workspace IDs, for Restricted
	Policy      Policy     `json:"policy"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// Algorithm is code offered for computation.
type Algorithm struct {
	ID          string     `json:"id"`
	WorkspaceID string     `json:"workspace_id"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Kind        string     `json:"kind"` // KindWasm, KindBin or KindPython
	FileName    string     `json:"file_name"`
	SHA256      string     `json:"sha256"`
	Size        int64      `json:"size"`
	Args        []string   `json:"args"` // entry arguments, passed before the computation's own
	CWL         string     `json:"cwl,omitempty"`
	Visibility  Visibility `json:"visibility"`
	SharedWith  []string   `json:"shared_with"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}
