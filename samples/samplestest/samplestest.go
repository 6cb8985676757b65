// Package samplestest builds the Go samples for tests, once per test
// process and once per version of their sources across processes.
//
// It is separate from package samples so that non-test code (cove serve
// --dev) does not import package testing.
package samplestest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove/samples"
)

// buildTimeout bounds one build; a cold Go build cache for GOARCH=wasm
// compiles the standard library, which takes tens of seconds.
const buildTimeout = 5 * time.Minute

type build struct {
	once sync.Once
	path string
	err  error
}

// builds holds one entry per sample name for the life of the test
// process, so that the tests of a package share one build.
var (
	mu     sync.Mutex
	builds = map[string]*build{}
)

// MustBuildWasm returns the path of the WebAssembly module of the Go
// sample name, building it on first use. Modules are kept under
// os.TempDir()/cove-samples, named by a digest of their sources, so later
// `go test` runs reuse them. It fails tb when the build fails.
func MustBuildWasm(tb testing.TB, name string) string {
	tb.Helper()
	mu.Lock()
	b, ok := builds[name]
	if !ok {
		b = &build{}
		builds[name] = b
	}
	mu.Unlock()

	b.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		b.path, b.err = samples.BuildWasm(ctx, name, filepath.Join(os.TempDir(), "cove-samples"))
	})
	if b.err != nil {
		tb.Fatalf("build sample %s: %v", name, b.err)
	}
	return b.path
}
