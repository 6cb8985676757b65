package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"filippo.io/age"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/agent"
	"github.com/covecompute/cove/agent/agenttest"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/driver/process"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/samples"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sandbox"
)

// env is a fake control plane on a real embedded NATS server and blob
// store.
type env struct {
	cp *agenttest.ControlPlane
	id *age.X25519Identity // the result consumer
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	bus := agenttest.MustOpenBus(tb)
	return &env{cp: agenttest.New(tb, bus, agenttest.MustOpenBlobs(tb)), id: agenttest.MustIdentity(tb)}
}

// dataset is one dataset of a test run.
type dataset struct {
	name, format, file string
	data               []byte
}

// manifest stores the algorithm and datasets and returns their manifest,
// sealed to e's consumer.
func (e *env) manifest(tb testing.TB, kind, file string, algorithm []byte, args []string, datasets ...dataset) computation.Manifest {
	tb.Helper()
	sum, size := agenttest.MustPut(tb, e.cp.Blobs, algorithm)
	m := computation.Manifest{
		ComputationID: cove.NewID("cmp"),
		Algorithm: computation.ManifestAlgorithm{
			ID: cove.NewID("alg"), Name: file, Kind: kind, FileName: file, SHA256: sum, Size: size, Args: args,
		},
		ResultConsumers: []computation.ResultConsumer{{UserID: cove.NewID("usr"), Recipient: e.id.Recipient().String()}},
		Limits:          computation.Limits{CPUs: 1, MemoryBytes: 256 << 20, DiskBytes: 64 << 20, MaxDurationSeconds: 120},
	}
	for _, d := range datasets {
		sum, size := agenttest.MustPut(tb, e.cp.Blobs, d.data)
		m.Datasets = append(m.Datasets, computation.ManifestDataset{
			ID: cove.NewID("ds"), Name: d.name, Format: d.format, FileName: d.file, SHA256: sum, Size: size,
		})
	}
	return m
}

// wasmManifest is the manifest of the Go sample name built for wasm.
func (e *env) wasmManifest(tb testing.TB, name string, args []string, datasets ...dataset) computation.Manifest {
	tb.Helper()
	module, err := os.ReadFile(samplestest.MustBuildWasm(tb, name))
	if err != nil {
		tb.Fatal(err)
	}
	return e.manifest(tb, "wasm", name+".wasm", module, args, datasets...)
}

// runAgent runs the agent of r to its end and waits for the control plane
// to have received everything it reported.
func (e *env) runAgent(tb testing.TB, ctx context.Context, r *agenttest.Run, cfg agent.Config) agent.Outcome {
	tb.Helper()
	out, err := agent.Run(ctx, cfg)
	if err != nil {
		tb.Fatalf("agent.Run: %v (outcome %+v)", err, out)
	}
	if _, err := os.Stat(cfg.WorkDir); !errors.Is(err, os.ErrNotExist) {
		tb.Errorf("work directory %s left behind (stat: %v)", cfg.WorkDir, err)
	}
	if out.State != computation.Stopped {
		e.cp.WaitFinal(tb, r, time.Minute)
	}
	checkNoAgentGoroutines(tb)
	return out
}

// checkNoAgentGoroutines fails tb when goroutines of package agent outlive
// Run: with the tests in parallel it would mean nothing, so tests here run
// one at a time.
func checkNoAgentGoroutines(tb testing.TB) {
	tb.Helper()
	var stacks string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "covecompute/cove/agent.") {
			return
		}
	}
	tb.Errorf("goroutines of the agent outlive Run:\n%s", stacks)
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// wantFailed checks that the run failed with reason, as the outcome and
// the last event say, and that nothing reached the results.
func wantFailed(tb testing.TB, e *env, r *agenttest.Run, out agent.Outcome, reason computation.Reason) agenttest.Snapshot {
	tb.Helper()
	s := e.cp.Snapshot(r)
	if out.State != computation.Failed || out.Reason != reason {
		tb.Fatalf("outcome %+v, want failed %s", out, reason)
	}
	final, ok := s.Final()
	if !ok || final.State != string(computation.Failed) || final.Reason != string(reason) || final.Message == "" {
		tb.Fatalf("last event %+v of %v, want failed %s with a message", final, s.States(), reason)
	}
	if s.Begin != nil || s.ResultChunks > 0 || s.Commit != nil {
		tb.Errorf("a failed run sent results: begin %v, %d chunks", s.Begin, s.ResultChunks)
	}
	if len(s.Problems) > 0 {
		tb.Errorf("protocol problems: %v", s.Problems)
	}
	return s
}

var text = "The quick brown fox\njumps over the lazy dog.\nthe end"

func TestWordcount(t *testing.T) {
	e := newEnv(t)
	books := agenttest.MustTar(t, map[string]string{
		"a.txt":     "the cat and the hat\n",
		"sub/b.txt": "The Cat sat\non the mat\n",
	})
	m := e.wasmManifest(t, "wordcount", nil,
		dataset{name: "notes", format: "file", file: "notes.txt", data: []byte(text)},
		dataset{name: "books", format: "tar", file: "books.tar", data: books})
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	cfg := e.cp.AgentConfig(t, r, "", agenttest.MustWasmDriver(t))

	out := e.runAgent(t, testContext(t), r, cfg)
	if out.State != computation.Succeeded || out.Reason != "" {
		t.Fatalf("outcome %+v, want succeeded", out)
	}
	s := e.cp.Snapshot(r)
	if len(s.Problems) > 0 {
		t.Errorf("protocol problems: %v", s.Problems)
	}
	want := []string{"attesting", "receiving", "running", "publishing", "succeeded"}
	if !slices.Equal(s.States(), want) {
		t.Fatalf("states %v, want %v", s.States(), want)
	}
	final, _ := s.Final()
	if final.LogLines != int64(len(s.Lines)) || len(s.Lines) != 4 {
		t.Errorf("last event counts %d log lines, %d arrived, want 4", final.LogLines, len(s.Lines))
	}
	if final.CPUTime <= 0 || final.PeakMemory <= 0 {
		t.Errorf("last event has no usage: %+v", final)
	}
	if s.Evidence == nil || s.Evidence.Kind != agent.EvidenceKindNone {
		t.Errorf("evidence %+v", s.Evidence)
	}
	if s.Heartbeats == 0 {
		t.Error("no heartbeat arrived")
	}
	if s.Commit == nil || s.Commit.Files != 1 || s.Commit.Size != int64(len(s.Result)) {
		t.Fatalf("commit %+v for %d bytes", s.Commit, len(s.Result))
	}
	if bytes.Contains(s.Result, []byte("wordcount")) {
		t.Error("the result is not encrypted")
	}

	files := agenttest.Open(t, s.Result, e.id)
	var report struct {
		Files, Lines, Words int64
		Top                 []struct {
			Word  string
			Count int64
		}
	}
	if err := json.Unmarshal(files["wordcount.json"], &report); err != nil {
		t.Fatalf("wordcount.json: %v (%q)", err, files["wordcount.json"])
	}
	if report.Files != 3 || report.Lines != 6 || report.Words != 22 {
		t.Errorf("report %+v, want 3 files, 6 lines, 22 words", report)
	}
	if len(report.Top) == 0 || report.Top[0].Word != "the" || report.Top[0].Count != 7 {
		t.Errorf("top words %+v, want the×7 first", report.Top)
	}
	// A result consumer's identity is needed: another key cannot open it.
	if _, err := age.Decrypt(bytes.NewReader(s.Result), agenttest.MustIdentity(t)); err == nil {
		t.Error("a stranger decrypted the result")
	}
}

func TestHashMismatch(t *testing.T) {
	e := newEnv(t)
	books := agenttest.MustTar(t, map[string]string{"a.txt": "alpha\n", "b.txt": "beta\n"})
	tests := []struct {
		name  string
		spec  func(m computation.Manifest) agenttest.RunSpec
		wantN bool // whether chunks are requested at all
	}{
		{"file dataset byte flipped", func(m computation.Manifest) agenttest.RunSpec {
			return agenttest.RunSpec{Manifest: m, Chunk: flipIn(m.Datasets[0].SHA256)}
		}, true},
		{"tar dataset byte flipped", func(m computation.Manifest) agenttest.RunSpec {
			return agenttest.RunSpec{Manifest: m, Chunk: flipIn(m.Datasets[1].SHA256)}
		}, true},
		{"algorithm byte flipped", func(m computation.Manifest) agenttest.RunSpec {
			return agenttest.RunSpec{Manifest: m, Chunk: flipIn(m.Algorithm.SHA256)}
		}, true},
		{"chunk short", func(m computation.Manifest) agenttest.RunSpec {
			return agenttest.RunSpec{Manifest: m, Chunk: func(sum string, _ int64, b []byte) []byte {
				if sum == m.Datasets[0].SHA256 {
					return b[:len(b)-1]
				}
				return b
			}}
		}, true},
		{"chunk long", func(m computation.Manifest) agenttest.RunSpec {
			return agenttest.RunSpec{Manifest: m, Chunk: func(sum string, _ int64, b []byte) []byte {
				if sum == m.Datasets[0].SHA256 {
					return append(b, '!')
				}
				return b
			}}
		}, true},
		{"manifest digest wrong", func(m computation.Manifest) agenttest.RunSpec {
			return agenttest.RunSpec{Manifest: m, Manifested: func(r *runproto.ManifestReply) {
				r.SHA256 = strings.Repeat("0", 64)
			}}
		}, false},
		{"manifest bytes changed", func(m computation.Manifest) agenttest.RunSpec {
			return agenttest.RunSpec{Manifest: m, Manifested: func(r *runproto.ManifestReply) {
				r.Manifest = bytes.Replace(r.Manifest, []byte(`"notes"`), []byte(`"Notes"`), 1)
			}}
		}, false},
	}
	wasmDriver := agenttest.MustWasmDriver(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := e.wasmManifest(t, "wordcount", nil,
				dataset{name: "notes", format: "file", file: "notes.txt", data: []byte(text)},
				dataset{name: "books", format: "tar", file: "books.tar", data: books})
			r := e.cp.AddRun(t, cove.NewID("run"), tt.spec(m))
			out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", wasmDriver))
			s := wantFailed(t, e, r, out, computation.HashMismatch)
			if slices.Contains(s.States(), "running") {
				t.Errorf("the algorithm ran on unverified inputs: %v", s.States())
			}
			if !tt.wantN && s.ChunksServed > 0 {
				t.Errorf("%d chunks served after a manifest mismatch", s.ChunksServed)
			}
		})
	}
}

// flipIn returns a chunk hook that flips one bit of the blob sum.
func flipIn(sum string) func(string, int64, []byte) []byte {
	return func(s string, _ int64, b []byte) []byte {
		if s == sum && len(b) > 0 {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 1
		}
		return b
	}
}

// The agent rides out a control plane that is away for a moment (a
// restart): its requests meet no responders, and it asks again.
func TestControlPlaneAway(t *testing.T) {
	e := newEnv(t)
	data := bytes.Repeat([]byte("word "), 120_000) // 600 kB: two chunks, in flight with the algorithm's
	m := e.wasmManifest(t, "wordcount", nil, dataset{name: "big", format: "file", file: "big.txt", data: data})
	var once [2]sync.Once
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{
		Manifest: m,
		// Away after answering the manifest: the attestation retries.
		Manifested: func(*runproto.ManifestReply) { once[0].Do(func() { e.cp.Away(700 * time.Millisecond) }) },
		// Away after answering the attestation: every chunk retries.
		Attest: func(runproto.Evidence) error {
			once[1].Do(func() { e.cp.Away(700 * time.Millisecond) })
			return nil
		},
	})
	start := time.Now()
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", agenttest.MustWasmDriver(t)))
	if out.State != computation.Succeeded {
		t.Fatalf("outcome %+v", out)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("run took %v: the control plane was not away twice", d)
	}
	files := agenttest.Open(t, e.cp.Snapshot(r).Result, e.id)
	if !bytes.Contains(files["wordcount.json"], []byte(`"words": 120000`)) {
		t.Errorf("wordcount.json: %s", files["wordcount.json"])
	}
}

func TestAttestationRefused(t *testing.T) {
	e := newEnv(t)
	m := e.wasmManifest(t, "hello", nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m, Attest: func(runproto.Evidence) error {
		return cove.Errorf(cove.Forbidden, "the dataset requires a TEE")
	}})
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", agenttest.MustWasmDriver(t)))
	s := wantFailed(t, e, r, out, computation.AttestationFailed)
	if s.ChunksServed != 0 || !slices.Equal(s.States(), []string{"attesting", "failed"}) {
		t.Errorf("after a refused attestation: %d chunks, states %v", s.ChunksServed, s.States())
	}
	if final, _ := s.Final(); !strings.Contains(final.Message, "requires a TEE") {
		t.Errorf("message %q does not say why", final.Message)
	}
}

func TestAlgorithmFails(t *testing.T) {
	e := newEnv(t)
	wasmDriver := agenttest.MustWasmDriver(t)
	tests := []struct {
		name      string
		args      []string
		maxSecs   int64
		reason    computation.Reason
		exit      int
		wantLines []string
	}{
		{"exit 3", []string{"exit", "3"}, 60, computation.AlgorithmError, 3, nil},
		{"error on stderr", []string{"read", "/cove/inputs/missing"}, 60, computation.AlgorithmError, 1, []string{"stderr:probe read: "}},
		{"timeout", []string{"sleep", "1h"}, 1, computation.Timeout, -1, nil},
		{"oom", []string{"alloc"}, 60, computation.OOM, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := e.wasmManifest(t, "probe", tt.args)
			m.Limits.MaxDurationSeconds = tt.maxSecs
			m.Limits.MemoryBytes = 64 << 20
			r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
			out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", wasmDriver))
			s := wantFailed(t, e, r, out, tt.reason)
			final, _ := s.Final()
			if tt.exit >= 0 {
				if out.ExitCode == nil || *out.ExitCode != tt.exit || final.ExitCode == nil || *final.ExitCode != tt.exit {
					t.Errorf("exit code %v / %v, want %d", out.ExitCode, final.ExitCode, tt.exit)
				}
			}
			if final.LogLines != int64(len(s.Lines)) {
				t.Errorf("last event counts %d lines, %d arrived", final.LogLines, len(s.Lines))
			}
			for i, want := range tt.wantLines {
				stream, prefix, _ := strings.Cut(want, ":")
				if i >= len(s.Lines) || s.Lines[i].Stream != stream || !strings.HasPrefix(s.Lines[i].Text, prefix) {
					t.Errorf("log lines %+v, want line %d %q", s.Lines, i, want)
				}
			}
		})
	}
}

func TestBinaryGarbage(t *testing.T) {
	e := newEnv(t)
	m := e.wasmManifest(t, "probe", []string{"garbage"})
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", agenttest.MustWasmDriver(t)))
	if out.State != computation.Succeeded {
		t.Fatalf("outcome %+v", out)
	}
	s := e.cp.Snapshot(r)
	if len(s.Lines) == 0 {
		t.Fatal("no log lines")
	}
	var all strings.Builder
	for i, l := range s.Lines {
		if l.Seq != int64(i+1) || l.Stream != "stdout" || !utf8.ValidString(l.Text) {
			t.Fatalf("line %d: %+v", i, l)
		}
		all.WriteString(l.Text)
	}
	if !strings.Contains(all.String(), "\uFFFD") {
		t.Error("invalid UTF-8 was not replaced")
	}
}

// writerDriver returns a driver whose algorithm is write.
func writerDriver(write func(spec sandbox.Spec)) *agenttest.Driver {
	return &agenttest.Driver{DriverName: "wasm", RunFunc: func(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
		write(spec)
		return sandbox.Result{}, nil
	}}
}

func TestManyLogLines(t *testing.T) {
	const n = 200_000
	e := newEnv(t)
	// Both streams write at once, in writes that cut lines anywhere, as a
	// process driver copying two pipes does.
	d := writerDriver(func(spec sandbox.Spec) {
		var wg sync.WaitGroup
		for _, w := range []struct {
			name string
			w    interface{ Write([]byte) (int, error) }
		}{{"out", spec.Stdout}, {"err", spec.Stderr}} {
			wg.Go(func() {
				var buf bytes.Buffer
				for i := range n / 2 {
					fmt.Fprintf(&buf, "%s line %d\n", w.name, i)
					if buf.Len() > 4000+i%97 {
						b := buf.Bytes()
						cut := len(b) / 3
						w.w.Write(b[:cut])
						w.w.Write(b[cut:])
						buf.Reset()
					}
				}
				w.w.Write(buf.Bytes())
			})
		}
		wg.Wait()
	})
	m := e.manifest(t, "wasm", "a.wasm", []byte("\x00asm"), nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	start := time.Now()
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", d))
	if out.State != computation.Succeeded {
		t.Fatalf("outcome %+v", out)
	}
	s := e.cp.Snapshot(r)
	final, _ := s.Final()
	t.Logf("%d lines in %d batches in %v", len(s.Lines), s.Batches, time.Since(start))
	if len(s.Lines) != n || final.LogLines != n {
		t.Fatalf("%d lines arrived, last event counts %d, want %d", len(s.Lines), final.LogLines, n)
	}
	next := map[string]int{}
	for i, l := range s.Lines {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d", i, l.Seq)
		}
		name := map[string]string{"stdout": "out", "stderr": "err"}[l.Stream]
		if want := fmt.Sprintf("%s line %d", name, next[l.Stream]); l.Text != want {
			t.Fatalf("line %d is %q, want %q", i, l.Text, want)
		}
		next[l.Stream]++
	}
	if s.Batches > n/100 {
		t.Errorf("%d batches for %d lines: not batched", s.Batches, n)
	}
}

func TestLongLines(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("é", 100_000) // 200,000 bytes, two per rune
	d := writerDriver(func(spec sandbox.Spec) {
		for i := 0; i < len(long); i += 999 { // cuts runes in two
			spec.Stdout.Write([]byte(long[i:min(i+999, len(long))]))
		}
		spec.Stdout.Write([]byte("\r\nlast line without newline"))
		spec.Stderr.Write(bytes.Repeat([]byte{0}, 70_000))
	})
	m := e.manifest(t, "wasm", "a.wasm", []byte("\x00asm"), nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	if out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", d)); out.State != computation.Succeeded {
		t.Fatalf("outcome %+v", out)
	}
	s := e.cp.Snapshot(r)
	var stdout, stderr []string
	for _, l := range s.Lines {
		if len(l.Text) > 64<<10 || !utf8.ValidString(l.Text) {
			t.Fatalf("line %d: %d bytes, valid %v", l.Seq, len(l.Text), utf8.ValidString(l.Text))
		}
		if l.Stream == "stdout" {
			stdout = append(stdout, l.Text)
		} else {
			stderr = append(stderr, l.Text)
		}
	}
	if len(stdout) < 5 || strings.Join(stdout[:len(stdout)-1], "") != long || stdout[len(stdout)-1] != "last line without newline" {
		t.Errorf("stdout came as %d lines that do not join to the original", len(stdout))
	}
	if len(stderr) != 2 || len(stderr[0])+len(stderr[1]) != 70_000 {
		t.Errorf("stderr came as %d lines", len(stderr))
	}
}

func TestStop(t *testing.T) {
	e := newEnv(t)
	wasmDriver := agenttest.MustWasmDriver(t)
	for _, how := range []string{"control", "context"} {
		t.Run(how, func(t *testing.T) {
			m := e.wasmManifest(t, "probe", []string{"sleep", "1h"})
			r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			done := make(chan agent.Outcome, 1)
			cfg := e.cp.AgentConfig(t, r, "", wasmDriver)
			go func() {
				out, err := agent.Run(ctx, cfg)
				if err != nil {
					t.Errorf("Run: %v", err)
				}
				done <- out
			}()
			e.cp.WaitState(t, r, computation.Running, time.Minute)

			start := time.Now()
			if how == "control" {
				e.cp.Stop(t, r)
			} else {
				cancel()
			}
			var out agent.Outcome
			select {
			case out = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the agent did not stop")
			}
			if out.State != computation.Stopped {
				t.Errorf("outcome %+v, want stopped", out)
			}
			checkNoAgentGoroutines(t)
			t.Logf("stopped in %v", time.Since(start))
			s := e.cp.Snapshot(r)
			if !slices.Equal(s.States(), []string{"attesting", "receiving", "running"}) || s.Begin != nil {
				t.Errorf("after a stop: states %v, results begun %v", s.States(), s.Begin != nil)
			}
		})
	}
}

func TestPythonProcess(t *testing.T) {
	d := process.New(process.Config{})
	if err := d.Available(); err != nil {
		t.Skipf("process driver unavailable: %v", err)
	}
	e := newEnv(t)
	m := e.manifest(t, "python", "stats.py", samples.StatsPy, nil,
		dataset{name: "people", format: "file", file: "people.csv", data: samples.PeopleCSV})
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, mustSandboxDir(t), d))
	s := e.cp.Snapshot(r)
	if out.State != computation.Succeeded {
		t.Fatalf("outcome %+v, logs %+v", out, s.Lines)
	}
	files := agenttest.Open(t, s.Result, e.id)
	var stats map[string]any
	if err := json.Unmarshal(files["stats.json"], &stats); err != nil {
		t.Fatalf("stats.json: %v (%q)", err, files["stats.json"])
	}
	if !bytes.Contains(files["stats.json"], []byte("income")) || len(s.Lines) == 0 {
		t.Errorf("stats.json %s, %d log lines", files["stats.json"], len(s.Lines))
	}
}

// mustSandboxDir returns a directory the process driver's sandbox user can
// cross when the tests run as root: t.TempDir's parent is 0700.
func mustSandboxDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

func TestNoDriverForKind(t *testing.T) {
	e := newEnv(t)
	m := e.manifest(t, "bin", "algo", []byte("#!/bin/sh\n"), nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", agenttest.MustWasmDriver(t)))
	wantFailed(t, e, r, out, computation.Internal)
}

func TestBadOutputs(t *testing.T) {
	e := newEnv(t)
	d := writerDriver(func(spec sandbox.Spec) {
		os.Symlink("/etc/passwd", filepath.Join(spec.OutputDir, "leak"))
	})
	m := e.manifest(t, "wasm", "a.wasm", []byte("\x00asm"), nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", d))
	if out.State != computation.Failed || out.Reason != computation.AlgorithmError {
		t.Fatalf("outcome %+v, want algorithm_error", out)
	}
	if s := e.cp.Snapshot(r); s.Commit != nil {
		t.Error("a result was committed")
	}
}

func TestConfigErrors(t *testing.T) {
	e := newEnv(t)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: e.manifest(t, "wasm", "a.wasm", []byte("x"), nil)})
	good := e.cp.AgentConfig(t, r, "", agenttest.MustWasmDriver(t))
	tests := []struct {
		name string
		edit func(*agent.Config)
		code cove.Code
	}{
		{"run ID with a dot", func(c *agent.Config) { c.RunID = "run.x" }, cove.Invalid},
		{"run ID with a wildcard", func(c *agent.Config) { c.RunID = "run_>" }, cove.Invalid},
		{"no creds", func(c *agent.Config) { c.Creds = nil }, cove.Invalid},
		{"garbage creds", func(c *agent.Config) { c.Creds = []byte("nope") }, cove.Invalid},
		{"no drivers", func(c *agent.Config) { c.Drivers = nil }, cove.Invalid},
		{"no server", func(c *agent.Config) { c.NATSURL = "nats://127.0.0.1:1" }, cove.Unavailable},
		{"work dir not empty", func(c *agent.Config) {
			os.MkdirAll(filepath.Join(c.WorkDir, "x"), 0o700)
		}, cove.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			cfg.WorkDir = filepath.Join(t.TempDir(), "work")
			tt.edit(&cfg)
			out, err := agent.Run(testContext(t), cfg)
			if cove.ErrorCode(err) != tt.code || out.State != computation.Failed {
				t.Errorf("Run: %v, outcome %+v; want %s", err, out, tt.code)
			}
		})
	}
}

// A credential of one run cannot be used to act as another.
func TestOtherRunsCredential(t *testing.T) {
	e := newEnv(t)
	m := e.manifest(t, "wasm", "a.wasm", []byte("x"), nil)
	a := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	b := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	cfg := e.cp.AgentConfig(t, a, "", agenttest.MustWasmDriver(t))
	cfg.Creds = b.Creds
	ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
	defer cancel()
	out, err := agent.Run(ctx, cfg)
	if cove.ErrorCode(err) != cove.Forbidden || out.State != computation.Failed {
		t.Errorf("Run with another run's credential: %v, %+v; want forbidden", err, out)
	}
	if s := e.cp.Snapshot(a); len(s.Events) > 0 || s.Attested {
		t.Errorf("run a saw %v", s.States())
	}
}

func BenchmarkInputFetch(b *testing.B) {
	const size = 64 << 20
	e := newEnv(b)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	m := e.manifest(b, "wasm", "a.wasm", []byte("\x00asm"), nil,
		dataset{name: "big", format: "file", file: "big.bin", data: data})
	noop := writerDriver(func(sandbox.Spec) {})
	b.SetBytes(size)
	for b.Loop() {
		r := e.cp.AddRun(b, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
		out, err := agent.Run(context.Background(), e.cp.AgentConfig(b, r, "", noop))
		if err != nil || out.State != computation.Succeeded {
			b.Fatalf("Run: %v, %+v", err, out)
		}
	}
}
