package app

import (
	"context"
	"io"
	"path/filepath"

	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/sqlstore"
)

// catalogParts are the fields of Main that the catalog adds: the blob
// store, which computations and nodes use too, and the catalog service.
type catalogParts struct {
	// Blobs holds the content of datasets, algorithms and results, under
	// <data_dir>/blobs.
	Blobs *blob.FS
	// Catalog is the catalog service.
	Catalog *catalog.Service
}

// startCatalog opens the blob store, builds the catalog service, restores
// its relations and mounts its routes.
func (m *Main) startCatalog(ctx context.Context) error {
	var err error
	if m.Blobs, err = blob.NewFS(filepath.Join(m.Config.DataDir, "blobs")); err != nil {
		return err
	}
	m.Catalog = catalog.NewService(sqlstore.NewCatalogStore(m.DB), catalogBlobs{m.Blobs}, m.Authz, nil)
	if err := m.Catalog.SyncRelations(ctx); err != nil {
		return err
	}
	m.API.MountCatalog(m.Catalog)
	return nil
}

// catalogBlobs adapts the blob store to what the catalog consumes.
type catalogBlobs struct{ fs *blob.FS }

var (
	_ catalog.Blobs       = catalogBlobs{}
	_ catalog.BlobDeleter = catalogBlobs{}
)

func (b catalogBlobs) Put(ctx context.Context, r io.Reader, wantSHA256 string) (string, int64, error) {
	info, err := b.fs.Put(ctx, r, wantSHA256)
	return info.SHA256, info.Size, err
}

func (b catalogBlobs) Open(ctx context.Context, sha256 string) (io.ReadCloser, int64, error) {
	rc, info, err := b.fs.Open(ctx, sha256)
	return rc, info.Size, err
}

func (b catalogBlobs) Delete(ctx context.Context, sha256 string) error {
	return b.fs.Delete(ctx, sha256)
}
