package catalog

import (
	"context"
	"io"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
)

// Store persists datasets and algorithms. Methods return not_found for a
// missing row.
type Store interface {
	// Atomic runs fn in one transaction; fn's Store sees the transaction.
	Atomic(ctx context.Context, fn func(Store) error) error

	// CreateDataset inserts d with its SharedWith workspaces.
	CreateDataset(ctx context.Context, d *Dataset) error
	FindDatasetByID(ctx context.Context, id string) (*Dataset, error)
	// FindDatasets lists, ordered by ID, the datasets userID may see that
	// match f: those of the workspaces userID is a member of, public ones,
	// and restricted ones shared with one of those workspaces. SharedWith
	// is filled in only for the datasets of userID's own workspaces.
	FindDatasets(ctx context.Context, userID string, f Filter, page cove.Page) ([]*Dataset, error)
	// UpdateDataset writes d's name, description, visibility, SharedWith
	// and UpdatedAt.
	UpdateDataset(ctx context.Context, d *Dataset) error
	// UpdateDatasetPolicy writes a dataset's policy and UpdatedAt.
	UpdateDatasetPolicy(ctx context.Context, id string, p Policy, at time.Time) error
	// LockDataset locks the dataset's row until the transaction ends (a
	// no-op where transactions are already serialized).
	LockDataset(ctx context.Context, id string) error
	DeleteDataset(ctx context.Context, id string) error
	// FindAllDatasets calls fn for every dataset, SharedWith included.
	FindAllDatasets(ctx context.Context, fn func(*Dataset) error) error

	// CreateAlgorithm inserts a with its SharedWith workspaces.
	CreateAlgorithm(ctx context.Context, a *Algorithm) error
	FindAlgorithmByID(ctx context.Context, id string) (*Algorithm, error)
	// FindAlgorithms is FindDatasets for algorithms.
	FindAlgorithms(ctx context.Context, userID string, f Filter, page cove.Page) ([]*Algorithm, error)
	// UpdateAlgorithm writes a's name, description, visibility,
	// SharedWith, CWL and UpdatedAt.
	UpdateAlgorithm(ctx context.Context, a *Algorithm) error
	// LockAlgorithm is LockDataset for algorithms.
	LockAlgorithm(ctx context.Context, id string) error
	DeleteAlgorithm(ctx context.Context, id string) error
	// FindAllAlgorithms calls fn for every algorithm, SharedWith included.
	FindAllAlgorithms(ctx context.Context, fn func(*Algorithm) error) error

	// LockContent makes the transactions that add or remove a reference
	// to the content with digest sha256 wait for each other until the
	// transaction ends (a no-op where transactions are already serialized).
	LockContent(ctx context.Context, sha256 string) error
	// CountContentRefs counts the datasets and algorithms whose content
	// has digest sha256.
	CountContentRefs(ctx context.Context, sha256 string) (int, error)
	// FindMissingWorkspaces returns the IDs among ids that name no
	// workspace.
	FindMissingWorkspaces(ctx context.Context, ids []string) ([]string, error)

	RecordAudit(ctx context.Context, e audit.Entry) error
}

// Filter narrows a catalog list; empty fields match everything.
type Filter struct {
	// Name matches entries whose name contains it, in any case.
	Name        string
	WorkspaceID string
	Visibility  Visibility
	// Kind is an algorithm kind; datasets ignore it.
	Kind string
}

// Blobs holds the content of catalog entries, addressed by SHA-256. It is
// satisfied by an adapter over the blob store.
type Blobs interface {
	// Put streams r into the store and returns its lowercase hex SHA-256
	// and its size. It stores nothing when r fails, when ctx ends, or when
	// wantSHA256 is not empty and the content hashes to something else
	// (Invalid). Errors of r that are *cove.Error are returned unchanged.
	Put(ctx context.Context, r io.Reader, wantSHA256 string) (sha256 string, size int64, err error)
	// Open returns the content stored under sha256 and its size; NotFound
	// when nothing is.
	Open(ctx context.Context, sha256 string) (io.ReadCloser, int64, error)
}

// BlobDeleter is implemented by Blobs that can delete content. The catalog
// then removes content that no entry references any more when an entry is
// deleted; without it, that content stays until a garbage collector finds
// it.
type BlobDeleter interface {
	// Delete removes the content stored under sha256; deleting what is not
	// stored is no error.
	Delete(ctx context.Context, sha256 string) error
}

// Usage tells whether computations use a catalog entry; the computation
// service satisfies it. An entry in use cannot be deleted.
type Usage interface {
	DatasetInUse(ctx context.Context, id string) (bool, error)
	AlgorithmInUse(ctx context.Context, id string) (bool, error)
}
