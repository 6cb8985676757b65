package computation

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/gowebpki/jcs"

	"github.com/covecompute/cove"
)

// ManifestVersion is the version of the manifest format.
const ManifestVersion = 1

// Manifest is the exact description of what a computation runs: which code,
// over which data, for whom, within which limits. Every participant sees
// its SHA-256, and the agent binds its attestation evidence to it, so
// nobody can swap a part without the digest changing.
type Manifest struct {
	Version         int               `json:"version"`
	ComputationID   string            `json:"computation_id"`
	Algorithm       ManifestAlgorithm `json:"algorithm"`
	Datasets        []ManifestDataset `json:"datasets"`
	ResultConsumers []ResultConsumer  `json:"result_consumers"`
	Limits          Limits            `json:"limits"`
	Network         bool              `json:"network"`
	RequiredTEE     string            `json:"required_tee"`
}

// ManifestAlgorithm is the algorithm as the manifest pins it.
type ManifestAlgorithm struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	FileName string   `json:"file_name"`
	SHA256   string   `json:"sha256"`
	Size     int64    `json:"size"`
	Args     []string `json:"args"`
}

// ManifestDataset is one dataset as the manifest pins it. Name is the
// directory it appears under in the sandbox: /cove/inputs/<name>/.
type ManifestDataset struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Format   string `json:"format"`
	FileName string `json:"file_name"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
}

// ResultConsumer receives the sealed results: a user and the age X25519
// recipient ("age1...") they decrypt with.
type ResultConsumer struct {
	UserID    string `json:"user_id"`
	Recipient string `json:"recipient"`
}

// Limits bound each run of a computation.
type Limits struct {
	CPUs               float64 `json:"cpus"`
	MemoryBytes        int64   `json:"memory_bytes"`
	DiskBytes          int64   `json:"disk_bytes"`
	MaxDurationSeconds int64   `json:"max_duration_seconds"`
}

// Canonical returns the manifest as canonical JSON (RFC 8785) and its
// SHA-256 in hex. Anyone holding the JSON can recompute the digest with any
// RFC 8785 implementation.
func (m Manifest) Canonical() ([]byte, string, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, "", cove.Wrap(err, "could not encode the manifest")
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return nil, "", cove.Wrap(err, "could not canonicalize the manifest")
	}
	sum := sha256.Sum256(canon)
	return canon, hex.EncodeToString(sum[:]), nil
}
