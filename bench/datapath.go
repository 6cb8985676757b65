package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/sandbox"
)

// datapath writes a file of random bytes (1 GiB), times `sha256sum` over
// it, uploads it as a dataset through the HTTP API (the SDK's upload, as
// `cove dataset upload` does) and times that, then starts a run over it and
// times its delivery: StartRun to the moment the sandbox driver is called,
// when the node has fetched, verified and decrypted the dataset into the
// run's input directory. Upload and delivery are compared with sha256sum,
// since each at least hashes every byte.
func datapath(ctx context.Context, r *runner, _ map[string]bool) ([]Result, error) {
	const sc = "datapath"
	size := int64(r.size(1<<30, 64<<20))
	dir, err := r.tempDir(sc)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "dataset.bin")
	r.progress("datapath: writing %d MiB of random bytes", size>>20)
	if err := randomFile(path, size); err != nil {
		return nil, err
	}

	r.progress("datapath: sha256sum")
	t0 := time.Now()
	if out, err := exec.CommandContext(ctx, "sha256sum", path).Output(); err != nil {
		return nil, cove.Errorf(cove.Unavailable, "sha256sum %s: %v", path, err)
	} else if len(strings.Fields(string(out))) == 0 {
		return nil, fmt.Errorf("sha256sum printed nothing")
	}
	shaRate := float64(size) / mib / time.Since(t0).Seconds()

	var (
		mu      sync.Mutex
		started time.Time
		inBytes int64
	)
	drv := NoopDriver{Started: func(s sandbox.Spec) {
		mu.Lock()
		defer mu.Unlock()
		started = time.Now()
		for _, in := range s.Inputs {
			_ = filepath.WalkDir(in.Dir, func(_ string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if fi, err := d.Info(); err == nil {
						inBytes += fi.Size()
					}
				}
				return nil
			})
		}
	}}
	e, err := r.start(ctx, sc, Setup{Nodes: 1, Slots: 1, Driver: drv, DatasetBytes: 1 << 10, RunDisk: 2*size + 64<<20})
	if err != nil {
		return nil, err
	}
	defer e.Close()

	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r.progress("datapath: upload")
	t0 = time.Now()
	ds, err := e.Client.UploadDataset(ctx, e.Workspace, catalog.DatasetUpload{Name: "big", Format: catalog.FormatFile, FileName: "dataset.bin"}, f, size, nil)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	upRate := float64(size) / mib / time.Since(t0).Seconds()
	if _, err = e.Client.SetDatasetPolicy(ctx, ds.ID, catalog.Policy{AllowAnyAlgorithm: true, RequiredTEE: catalog.TEENone}); err != nil {
		return nil, err
	}
	e.Dataset = ds.ID
	comp, err := e.Computation(ctx)
	if err != nil {
		return nil, err
	}
	r.progress("datapath: delivery into a sandbox")
	rr := e.Run(ctx, comp, nil)
	if rr.Err != nil {
		return nil, rr.Err
	}
	mu.Lock()
	delivered, got := started.Sub(rr.Start), inBytes
	mu.Unlock()
	if got != size {
		return nil, fmt.Errorf("the sandbox got %d bytes of input, not %d", got, size)
	}
	dlRate := float64(size) / mib / delivered.Seconds()
	return []Result{
		figure(sc, fmt.Sprintf("sha256sum, %d MiB", size>>20), shaRate, "MiB/s"),
		figure(sc, "upload through the API", upRate, "MiB/s"),
		figure(sc, "delivery into a sandbox (run start to driver call)", dlRate, "MiB/s"),
		atLeast(sc, "upload / sha256sum", upRate/shaRate, "ratio", 0.7),
		atLeast(sc, "delivery / sha256sum", dlRate/shaRate, "ratio", 0.7),
	}, nil
}

// randomFile writes size bytes that do not compress to path.
func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return cove.Wrap(err, "cannot create the dataset file")
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.NewChaCha8([32]byte{'c', 'o', 'v', 'e'})
	if _, err := io.CopyN(w, rng, size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
