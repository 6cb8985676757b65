package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/agent"
	"github.com/covecompute/cove/agent/agenttest"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sandbox"
)

// inputsDriver is a driver whose algorithm records the algorithm file and
// every input file it is given, by base name.
func inputsDriver(mu *sync.Mutex, seen map[string][]byte) *agenttest.Driver {
	return writerDriver(func(spec sandbox.Spec) {
		mu.Lock()
		defer mu.Unlock()
		if b, err := os.ReadFile(spec.Algorithm); err == nil {
			seen[filepath.Base(spec.Algorithm)] = b
		}
		for _, in := range spec.Inputs {
			files, _ := os.ReadDir(in.Dir)
			for _, f := range files {
				if b, err := os.ReadFile(filepath.Join(in.Dir, f.Name())); err == nil {
					seen[f.Name()] = b
				}
			}
		}
	})
}

// chunksOf is how many chunks the inputs of m take.
func chunksOf(m computation.Manifest) int {
	n := (m.Algorithm.Size + runproto.ChunkSize - 1) / runproto.ChunkSize
	for _, d := range m.Datasets {
		n += (d.Size + runproto.ChunkSize - 1) / runproto.ChunkSize
	}
	return int(n)
}

func mustCache(tb testing.TB) (*blob.Cache, string) {
	tb.Helper()
	dir := tb.TempDir()
	c, err := blob.OpenCache(dir, 64<<20)
	if err != nil {
		tb.Fatal(err)
	}
	return c, dir
}

// A second run over the same inputs reads them from the node's cache and
// fetches nothing; the sandbox gets the same bytes.
func TestCacheReused(t *testing.T) {
	e := newEnv(t)
	cache, _ := mustCache(t)
	data := bytes.Repeat([]byte("cached line\n"), 200_000) // several chunks
	m := e.manifest(t, "wasm", "alg.wasm", []byte("\x00asm module"), nil,
		dataset{name: "lines", format: "file", file: "lines.txt", data: data})
	var mu sync.Mutex
	for i, wantChunks := range []int{chunksOf(m), 0} {
		seen := map[string][]byte{}
		r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
		cfg := e.cp.AgentConfig(t, r, "", inputsDriver(&mu, seen))
		cfg.Cache = cache
		if out := e.runAgent(t, testContext(t), r, cfg); out.State != computation.Succeeded {
			t.Fatalf("run %d: outcome %+v", i, out)
		}
		if s := e.cp.Snapshot(r); s.ChunksServed != wantChunks {
			t.Errorf("run %d: %d chunks served, want %d", i, s.ChunksServed, wantChunks)
		}
		if !bytes.Equal(seen["lines.txt"], data) || string(seen["alg.wasm"]) != "\x00asm module" {
			t.Errorf("run %d: the sandbox got %d dataset bytes, algorithm %q", i, len(seen["lines.txt"]), seen["alg.wasm"])
		}
	}
}

// A damaged cache entry is detected, never given to the sandbox, and
// fetched again; when the control plane's bytes are wrong too, the run
// fails with hash_mismatch before the algorithm starts.
func TestCacheDamaged(t *testing.T) {
	e := newEnv(t)
	books := agenttest.MustTar(t, map[string]string{"a.txt": "alpha\n", "b.txt": "beta\n"})
	data := []byte(text)
	m := e.manifest(t, "wasm", "alg.wasm", []byte("\x00asm module"), nil,
		dataset{name: "notes", format: "file", file: "notes.txt", data: data},
		dataset{name: "books", format: "tar", file: "books.tar", data: books})
	damage := func(tb testing.TB, dir, sum string) {
		tb.Helper()
		p := filepath.Join(dir, "sha256", sum)
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		b[len(b)/2] ^= 1
		if err := os.Chmod(p, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name    string
		sum     func() string
		file    string
		content []byte
	}{
		{"file dataset", func() string { return m.Datasets[0].SHA256 }, "notes.txt", data},
		{"tar dataset", func() string { return m.Datasets[1].SHA256 }, "a.txt", []byte("alpha\n")},
		{"algorithm", func() string { return m.Algorithm.SHA256 }, "alg.wasm", []byte("\x00asm module")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cache, dir := mustCache(t)
			var mu sync.Mutex
			run := func(spec agenttest.RunSpec, seen map[string][]byte) (*agenttest.Run, agent.Outcome) {
				r := e.cp.AddRun(t, cove.NewID("run"), spec)
				cfg := e.cp.AgentConfig(t, r, "", inputsDriver(&mu, seen))
				cfg.Cache = cache
				return r, e.runAgent(t, testContext(t), r, cfg)
			}
			if _, out := run(agenttest.RunSpec{Manifest: m}, map[string][]byte{}); out.State != computation.Succeeded {
				t.Fatalf("filling run: %+v", out)
			}

			damage(t, dir, tt.sum())
			seen := map[string][]byte{}
			r, out := run(agenttest.RunSpec{Manifest: m}, seen)
			if out.State != computation.Succeeded {
				t.Fatalf("run over a damaged cache: %+v", out)
			}
			if s := e.cp.Snapshot(r); s.ChunksServed != 1 {
				t.Errorf("%d chunks served, want the damaged input's 1", s.ChunksServed)
			}
			if !bytes.Equal(seen[tt.file], tt.content) {
				t.Errorf("the sandbox got %q, want %q", seen[tt.file], tt.content)
			}

			// Damaged in the cache and on the wire: nothing reaches a sandbox.
			damage(t, dir, tt.sum())
			seen = map[string][]byte{}
			r, out = run(agenttest.RunSpec{Manifest: m, Chunk: flipIn(tt.sum())}, seen)
			wantFailed(t, e, r, out, computation.HashMismatch)
			if len(seen) > 0 {
				t.Errorf("the sandbox ran, on %d files", len(seen))
			}
			if _, err := cache.Open(tt.sum()); cove.ErrorCode(err) != cove.NotFound {
				t.Errorf("the damaged entry is still cached: %v", err)
			}
		})
	}
}

// Concurrent runs of the same inputs on one node fetch them once.
func TestCacheConcurrentRuns(t *testing.T) {
	const runs = 6
	e := newEnv(t)
	cache, _ := mustCache(t)
	data := bytes.Repeat([]byte("shared\n"), 300_000)
	m := e.manifest(t, "wasm", "alg.wasm", bytes.Repeat([]byte("module"), 100_000), nil,
		dataset{name: "shared", format: "file", file: "shared.txt", data: data})
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		seen  = make([]map[string][]byte, runs)
		all   = make([]*agenttest.Run, runs)
		outs  = make([]agent.Outcome, runs)
		errs  = make([]error, runs)
		ctx   = testContext(t)
		setup = make([]agent.Config, runs)
	)
	for i := range runs {
		seen[i] = map[string][]byte{}
		all[i] = e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
		setup[i] = e.cp.AgentConfig(t, all[i], "", inputsDriver(&mu, seen[i]))
		setup[i].Cache = cache
	}
	for i := range runs {
		wg.Go(func() { outs[i], errs[i] = agent.Run(ctx, setup[i]) })
	}
	wg.Wait()
	served := 0
	for i := range runs {
		if errs[i] != nil || outs[i].State != computation.Succeeded {
			t.Fatalf("run %d: %+v, %v", i, outs[i], errs[i])
		}
		served += e.cp.WaitFinal(t, all[i], time.Minute).ChunksServed
		if !bytes.Equal(seen[i]["shared.txt"], data) {
			t.Errorf("run %d: the sandbox got %d bytes, want %d", i, len(seen[i]["shared.txt"]), len(data))
		}
	}
	if served != chunksOf(m) {
		t.Errorf("%d chunks served to %d runs, want %d: one fetch of each input", served, runs, chunksOf(m))
	}
	checkNoAgentGoroutines(t)
}

// BenchmarkInputFetchCached is BenchmarkInputFetch with the input in the
// node's cache: it is read from disk and hashed on its way into the work
// directory, and not fetched. Compare with `sha256sum` of a file of the
// same size (BenchmarkSHA256 in package blob).
//
//	go test -run XXX -bench BenchmarkInputFetchCached ./agent/
func BenchmarkInputFetchCached(b *testing.B) {
	const size = 256 << 20
	e := newEnv(b)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	m := e.manifest(b, "wasm", "a.wasm", []byte("\x00asm"), nil,
		dataset{name: "big", format: "file", file: "big.bin", data: data})
	cache, err := blob.OpenCache(b.TempDir(), 2*size)
	if err != nil {
		b.Fatal(err)
	}
	noop := writerDriver(func(sandbox.Spec) {})
	run := func() {
		r := e.cp.AddRun(b, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
		cfg := e.cp.AgentConfig(b, r, "", noop)
		cfg.Cache = cache
		out, err := agent.Run(context.Background(), cfg)
		if err != nil || out.State != computation.Succeeded {
			b.Fatalf("Run: %v, %+v", err, out)
		}
	}
	run() // fills the cache
	b.SetBytes(size)
	for b.Loop() {
		run()
	}
}
