package wasm_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/driver/wasm"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sandbox"
)

// testCacheDir is the compilation cache every test driver shares, across
// tests and `go test` runs: compiling a Go module takes seconds, a minute
// under -race, and loading it compiled a fraction of one.
var testCacheDir = filepath.Join(os.TempDir(), "cove-wasm-test-cache")

// MustOpenDriver returns a driver closed when the test ends, with the
// shared compilation cache unless cfg names one.
func MustOpenDriver(tb testing.TB, cfg wasm.Config) *wasm.Driver {
	tb.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = testCacheDir
	}
	d, err := wasm.New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(context.Background()); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return d
}

// run is one finished run and what it left behind.
type run struct {
	sandbox.Result
	Stdout, Stderr bytes.Buffer
	OutputDir      string
}

// Spec returns a spec for module with args, an empty output directory and
// no inputs; edit is applied before the run.
func Spec(tb testing.TB, module string, args ...string) sandbox.Spec {
	tb.Helper()
	return sandbox.Spec{
		RunID:           "run_test",
		Algorithm:       module,
		Kind:            "wasm",
		AlgorithmSHA256: MustSHA256(tb, module),
		Args:            args,
		OutputDir:       tb.TempDir(),
	}
}

// MustRun runs spec to its end and fails tb if the driver itself failed.
func MustRun(tb testing.TB, ctx context.Context, d *wasm.Driver, spec sandbox.Spec) *run {
	tb.Helper()
	r := &run{OutputDir: spec.OutputDir}
	spec.Stdout, spec.Stderr = &r.Stdout, &r.Stderr
	res, err := d.Run(ctx, spec)
	if err != nil {
		tb.Fatalf("Run: %v", err)
	}
	r.Result = res
	return r
}

func MustSHA256(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// MustWriteFiles creates files (slash paths to contents) under a new
// directory and returns it.
func MustWriteFiles(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

func (r *run) check(tb testing.TB, exit int, failure sandbox.Failure) {
	tb.Helper()
	if r.ExitCode != exit || r.Failure != failure {
		tb.Fatalf("exit %d, failure %q (%s), want exit %d, failure %q\nstdout: %s\nstderr: %s",
			r.ExitCode, r.Failure, r.Detail, exit, failure, r.Stdout.String(), r.Stderr.String())
	}
}

func TestDriver(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	var _ sandbox.Driver = d
	if d.Name() != "wasm" {
		t.Errorf("Name = %q", d.Name())
	}
	if k := d.Kinds(); len(k) != 1 || k[0] != "wasm" {
		t.Errorf("Kinds = %v", k)
	}
	if err := d.Available(); err != nil {
		t.Errorf("Available: %v", err)
	}
}

func TestRunWordcount(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	spec := Spec(t, samplestest.MustBuildWasm(t, "wordcount"))
	spec.Inputs = []sandbox.Input{
		{Name: "books", Dir: MustWriteFiles(t, map[string]string{
			"a.txt":     "The cat and the hat.\nThe end",
			"sub/b.txt": "cat, CAT; dog\n\n",
		})},
		{Name: "empty", Dir: t.TempDir()},
	}
	r := MustRun(t, context.Background(), d, spec)
	r.check(t, 0, sandbox.FailureNone)

	var got struct {
		Files, Lines, Words int
		Top                 []struct {
			Word  string
			Count int
		}
	}
	b, err := os.ReadFile(filepath.Join(r.OutputDir, "wordcount.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Files != 2 || got.Lines != 4 || got.Words != 10 {
		t.Errorf("files %d lines %d words %d, want 2 4 10", got.Files, got.Lines, got.Words)
	}
	if len(got.Top) != 6 || got.Top[0].Word != "cat" || got.Top[0].Count != 3 || got.Top[1].Word != "the" {
		t.Errorf("top = %+v", got.Top)
	}
	if !strings.Contains(r.Stdout.String(), "wordcount: books/sub/b.txt: 2 lines, 3 words") {
		t.Errorf("stdout lacks progress:\n%s", r.Stdout.String())
	}
	if r.PeakMemory <= 0 || r.Wall <= 0 || r.CPUTime <= 0 {
		t.Errorf("peak memory %d, wall %v, CPU %v: want all > 0", r.PeakMemory, r.Wall, r.CPUTime)
	}
}

func TestRunExitCode(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	probe := samplestest.MustBuildWasm(t, "probe")
	for _, code := range []int{0, 1, 3, 255} {
		r := MustRun(t, context.Background(), d, Spec(t, probe, "exit", strconv.Itoa(code)))
		r.check(t, code, sandbox.FailureNone)
	}
}

func TestRunTimeout(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	probe := samplestest.MustBuildWasm(t, "probe")
	tests := []struct {
		name   string
		module string
		args   []string
	}{
		{"go loop", probe, []string{"loop"}},
		{"go sleep", probe, []string{"sleep", "1h"}},
		{"raw loop", MustWriteModule(t, loopBody), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := Spec(t, tt.module, tt.args...)
			spec.Limits.Duration = 300 * time.Millisecond
			r := MustRun(t, context.Background(), d, spec)
			r.check(t, -1, sandbox.FailureTimeout)
			if r.Wall > 3*time.Second {
				t.Errorf("stopped after %v for a 300ms limit", r.Wall)
			}
		})
	}
}

func TestRunContextDeadline(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r := MustRun(t, ctx, d, Spec(t, samplestest.MustBuildWasm(t, "probe"), "loop"))
	r.check(t, -1, sandbox.FailureTimeout)
}

func TestRunCanceled(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	probe := samplestest.MustBuildWasm(t, "probe")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	r := MustRun(t, ctx, d, Spec(t, probe, "loop"))
	r.check(t, -1, sandbox.FailureCanceled)

	// Already canceled: stopped before anything runs.
	r = MustRun(t, ctx, d, Spec(t, probe, "exit", "0"))
	r.check(t, -1, sandbox.FailureCanceled)
}

func TestRunCPULimit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the CPU-time cap uses Linux thread clocks")
	}
	d := MustOpenDriver(t, wasm.Config{})
	spec := Spec(t, samplestest.MustBuildWasm(t, "probe"), "loop")
	// A budget of 600ms of CPU within 30s: only the CPU cap can stop it
	// early, however busy the test machine is.
	spec.Limits.CPUs = 0.02
	spec.Limits.Duration = 30 * time.Second
	r := MustRun(t, context.Background(), d, spec)
	r.check(t, -1, sandbox.FailureTimeout)
	if !strings.Contains(r.Detail, "CPU") {
		t.Errorf("detail %q: want the CPU cap", r.Detail)
	}
	if r.CPUTime < 600*time.Millisecond || r.CPUTime > 1100*time.Millisecond {
		t.Errorf("CPU time %v, want just over the 600ms budget", r.CPUTime)
	}
}

// TestRunCPUTime checks the CPU time is the run's own: some, and no more
// than its wall time, as a module runs on one thread. (How much the
// thread got depends on what else the machine runs.)
func TestRunCPUTime(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	r := MustRun(t, context.Background(), d, Spec(t, samplestest.MustBuildWasm(t, "probe"), "spin", "300ms"))
	r.check(t, 0, sandbox.FailureNone)
	if r.CPUTime < 10*time.Millisecond || r.CPUTime > r.Wall+50*time.Millisecond {
		t.Errorf("CPU time %v for 300ms of spinning in %v of wall time", r.CPUTime, r.Wall)
	}
}

func TestRunOOM(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	probe := samplestest.MustBuildWasm(t, "probe")
	spec := Spec(t, probe, "alloc")
	spec.Limits.MemoryBytes = 64 << 20
	r := MustRun(t, context.Background(), d, spec)
	if r.Failure != sandbox.FailureOOM {
		t.Fatalf("failure %q (%s), exit %d, want oom\nstderr: %s", r.Failure, r.Detail, r.ExitCode, r.Stderr.String())
	}
	if r.PeakMemory > 64<<20 || r.PeakMemory < 32<<20 {
		t.Errorf("peak memory %d, want up to the 64 MiB limit", r.PeakMemory)
	}

	// A limit below the module's initial memory stops it before it starts.
	spec = Spec(t, probe, "exit", "0")
	spec.Limits.MemoryBytes = 64 << 10
	r = MustRun(t, context.Background(), d, spec)
	r.check(t, -1, sandbox.FailureOOM)
}

func TestRunDiskFull(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	const limit = 1 << 20
	spec := Spec(t, samplestest.MustBuildWasm(t, "probe"), "fill", "/cove/outputs/fill.bin")
	spec.Limits.DiskBytes = limit
	r := MustRun(t, context.Background(), d, spec)
	if r.Failure != sandbox.FailureDiskFull {
		t.Fatalf("failure %q (%s), want disk_full\nstderr: %s", r.Failure, r.Detail, r.Stderr.String())
	}
	var total int64
	filepath.WalkDir(r.OutputDir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			info, _ := e.Info()
			total += info.Size()
		}
		return err
	})
	if total > limit || total < limit-64<<10 {
		t.Errorf("%d bytes on the host, want just under the %d limit", total, limit)
	}
}

func TestRunConfinement(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	probe := samplestest.MustBuildWasm(t, "probe")

	secret := MustWriteFiles(t, map[string]string{"secret.txt": "host secret\n"})
	data := MustWriteFiles(t, map[string]string{"a.txt": "dataset\n", "sub/b.txt": "b\n"})
	// Links the host put in a dataset: one stays inside it, one leaves.
	if err := os.Symlink("sub/b.txt", filepath.Join(data, "inner")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(secret, "secret.txt"), filepath.Join(data, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../"+filepath.Base(secret)+"/secret.txt", filepath.Join(data, "sub", "up")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		args []string
		ok   bool
	}{
		{[]string{"read", "/cove/inputs/data/a.txt"}, true},
		{[]string{"read", "/cove/inputs/data/inner"}, true},
		{[]string{"ls", "/cove/inputs"}, true},
		{[]string{"ls", "/cove/inputs/data/sub"}, true},
		{[]string{"write", "/cove/outputs/result.txt"}, true},
		{[]string{"mkdir", "/cove/outputs/dir"}, true},

		{[]string{"read", "/etc/passwd"}, false},
		{[]string{"read", "../etc/passwd"}, false},
		{[]string{"read", "/cove/inputs/../../etc/passwd"}, false},
		{[]string{"read", "/cove/inputs/data/../../../etc/passwd"}, false},
		{[]string{"read", "/cove/outputs/../../etc/passwd"}, false},
		{[]string{"read", secret + "/secret.txt"}, false},
		{[]string{"read", "/cove/inputs/data/escape"}, false},
		{[]string{"read", "/cove/inputs/data/sub/up"}, false},
		{[]string{"ls", "/"}, false},
		{[]string{"ls", "/cove"}, false},
		{[]string{"ls", "/tmp"}, false},
		{[]string{"symlink", "../../../../etc/passwd", "/cove/outputs/link"}, false},
		{[]string{"symlink", "/etc/passwd", "/cove/outputs/link"}, false},
		{[]string{"write", "/cove/inputs/data/a.txt"}, false},
		{[]string{"write", "/cove/inputs/data/new.txt"}, false},
		{[]string{"write", "/cove/inputs/new.txt"}, false},
		{[]string{"mkdir", "/cove/inputs/data/dir"}, false},
		{[]string{"remove", "/cove/inputs/data/a.txt"}, false},
		{[]string{"write", "/tmp/x"}, false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			spec := Spec(t, probe, tt.args...)
			spec.Inputs = []sandbox.Input{{Name: "data", Dir: data}}
			r := MustRun(t, context.Background(), d, spec)
			if tt.ok {
				r.check(t, 0, sandbox.FailureNone)
			} else {
				r.check(t, 1, sandbox.FailureNone)
			}
			t.Logf("stdout %q, stderr %q", r.Stdout.String(), r.Stderr.String())
			if tt.args[0] == "ls" && tt.args[1] == "/cove/inputs" && r.Stdout.String() != "data\n" {
				t.Errorf("ls /cove/inputs = %q", r.Stdout.String())
			}
		})
	}

	// Nothing above changed the dataset or the host.
	if b, _ := os.ReadFile(filepath.Join(data, "a.txt")); string(b) != "dataset\n" {
		t.Errorf("input a.txt = %q", b)
	}
	for _, p := range []string{"new.txt", "dir"} {
		if _, err := os.Lstat(filepath.Join(data, p)); err == nil {
			t.Errorf("input %s was created", p)
		}
	}
	if _, err := os.Lstat("/tmp/x"); err == nil {
		t.Errorf("/tmp/x was created on the host")
	}
}

func TestRunArgsEnv(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	t.Setenv("COVE_HOST_ONLY", "leak")
	probe := samplestest.MustBuildWasm(t, "probe")
	spec := Spec(t, probe, "env", "two words", "")
	spec.Env = map[string]string{"B": "2", "A": "x=y"}
	r := MustRun(t, context.Background(), d, spec)
	r.check(t, 0, sandbox.FailureNone)
	want := "arg " + filepath.Base(probe) + "\narg env\narg two words\narg \nenv A=x=y\nenv B=2\n"
	if r.Stdout.String() != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.Stdout.String(), want)
	}
}

func TestRunClockAndRandom(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	probe := samplestest.MustBuildWasm(t, "probe")
	var randoms []string
	for range 2 {
		r := MustRun(t, context.Background(), d, Spec(t, probe, "clock"))
		r.check(t, 0, sandbox.FailureNone)
		var ns int64
		var random string
		if _, err := fmt.Sscan(r.Stdout.String(), &ns, &random); err != nil {
			t.Fatalf("clock output %q: %v", r.Stdout.String(), err)
		}
		if d := time.Since(time.Unix(0, ns)); d < 0 || d > time.Minute {
			t.Errorf("guest clock is %v off the host's", d)
		}
		randoms = append(randoms, random)
	}
	if randoms[0] == randoms[1] || len(randoms[0]) != 32 {
		t.Errorf("random bytes %q and %q: want two different 16-byte values", randoms[0], randoms[1])
	}
}

func TestRunStdoutBinary(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	r := MustRun(t, context.Background(), d, Spec(t, samplestest.MustBuildWasm(t, "probe"), "garbage"))
	r.check(t, 0, sandbox.FailureNone)
	var want []byte
	for range 4 {
		for c := range 256 {
			want = append(want, byte(c))
		}
	}
	want = append(want, 0xff, 0xfe, 0xc3, 0x28, 0x00, '\r', '\n')
	if !bytes.Equal(r.Stdout.Bytes(), want) {
		t.Errorf("stdout is %d bytes, not the %d written", r.Stdout.Len(), len(want))
	}
}

func TestRunInvalidModule(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	dir := t.TempDir()
	tests := []struct {
		name    string
		content []byte
		detail  string
	}{
		{"script", []byte("#!/bin/sh\necho hi\n"), "not a WebAssembly module"},
		{"empty", nil, "not a WebAssembly module"},
		{"truncated", []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01"), "not a valid WebAssembly module"},
		{"component", []byte("\x00asm\x0d\x00\x01\x00"), "component"},
		{"library", []byte("\x00asm\x01\x00\x00\x00"), "_start"},
		{"foreign import", importModule, `imports "f" from "env"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".wasm")
			if err := os.WriteFile(path, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			r := MustRun(t, context.Background(), d, Spec(t, path))
			r.check(t, -1, sandbox.FailureInvalid)
			if !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("detail %q lacks %q", r.Detail, tt.detail)
			}
		})
	}
}

func TestRunTrap(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	r := MustRun(t, context.Background(), d, Spec(t, MustWriteModule(t, unreachableBody)))
	r.check(t, -1, sandbox.FailureNone)
	if r.Detail != "the algorithm crashed: wasm error: unreachable" {
		t.Errorf("detail %q", r.Detail)
	}
}

func TestRunBadSpec(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	hello := samplestest.MustBuildWasm(t, "hello")
	other := MustWriteModule(t, unreachableBody)
	tests := []struct {
		name string
		edit func(*sandbox.Spec)
	}{
		{"kind", func(s *sandbox.Spec) { s.Kind = "python" }},
		{"input name", func(s *sandbox.Spec) { s.Inputs = []sandbox.Input{{Name: "..", Dir: t.TempDir()}} }},
		{"repeated input", func(s *sandbox.Spec) {
			s.Inputs = []sandbox.Input{{Name: "a", Dir: t.TempDir()}, {Name: "a", Dir: t.TempDir()}}
		}},
		{"digest", func(s *sandbox.Spec) { s.AlgorithmSHA256 = "abc" }},
		{"digest mismatch", func(s *sandbox.Spec) { s.AlgorithmSHA256 = MustSHA256(t, other) }},
		{"env", func(s *sandbox.Spec) { s.Env = map[string]string{"A=B": "c"} }},
		{"limits", func(s *sandbox.Spec) { s.Limits.MemoryBytes = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := Spec(t, hello)
			tt.edit(&spec)
			if _, err := d.Run(context.Background(), spec); cove.ErrorCode(err) != cove.Invalid {
				t.Errorf("Run: %v, want an invalid error", err)
			}
		})
	}
}

// TestRunConcurrent runs several modules at once, each with its own
// inputs, outputs and limits, to show none sees another's.
func TestRunConcurrent(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	wordcount := samplestest.MustBuildWasm(t, "wordcount")
	probe := samplestest.MustBuildWasm(t, "probe")

	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			words := strings.Repeat("w"+strconv.Itoa(i)+" ", i+1)
			spec := Spec(t, wordcount)
			spec.Inputs = []sandbox.Input{{Name: "in", Dir: MustWriteFiles(t, map[string]string{"f.txt": words})}}
			r := MustRun(t, context.Background(), d, spec)
			r.check(t, 0, sandbox.FailureNone)
			b, _ := os.ReadFile(filepath.Join(r.OutputDir, "wordcount.json"))
			want := `"word": "w` + strconv.Itoa(i) + `",` + "\n      \"count\": " + strconv.Itoa(i+1)
			if !strings.Contains(string(b), want) {
				t.Errorf("run %d wrote %s", i, b)
			}
		})
	}
	wg.Go(func() {
		spec := Spec(t, probe, "loop")
		spec.Limits.Duration = 500 * time.Millisecond
		MustRun(t, context.Background(), d, spec).check(t, -1, sandbox.FailureTimeout)
	})
	wg.Go(func() {
		spec := Spec(t, probe, "alloc")
		spec.Limits.MemoryBytes = 48 << 20
		if r := MustRun(t, context.Background(), d, spec); r.Failure != sandbox.FailureOOM {
			t.Errorf("alloc: failure %q", r.Failure)
		}
	})
	wg.Wait()
}

// TestRunCachesCompiledModule shows later runs of a module skip
// compilation, and even decoding: the first run, which compiles or at
// best loads compiled code from disk, is several times slower.
func TestRunCachesCompiledModule(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	hello := samplestest.MustBuildWasm(t, "hello")
	timeRun := func() time.Duration {
		start := time.Now()
		MustRun(t, context.Background(), d, Spec(t, hello)).check(t, 0, sandbox.FailureNone)
		return time.Since(start)
	}
	first := timeRun()
	later := min(timeRun(), timeRun(), timeRun())
	t.Logf("first run %v, fastest later run %v", first, later)
	if later*3 > first {
		t.Errorf("later runs took %v, the first %v: want them at least 3 times faster", later, first)
	}
}

func TestRunSmallCache(t *testing.T) {
	// With room for one module, alternating two recompiles each time and
	// evicts a module another run may still hold.
	d := MustOpenDriver(t, wasm.Config{MaxCachedModules: 1})
	hello := samplestest.MustBuildWasm(t, "hello")
	probe := samplestest.MustBuildWasm(t, "probe")
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			if i%2 == 0 {
				MustRun(t, context.Background(), d, Spec(t, hello)).check(t, 0, sandbox.FailureNone)
			} else {
				MustRun(t, context.Background(), d, Spec(t, probe, "exit", "7")).check(t, 7, sandbox.FailureNone)
			}
		})
	}
	wg.Wait()
}

func TestCloseStopsRuns(t *testing.T) {
	d, err := wasm.New(wasm.Config{CacheDir: testCacheDir})
	if err != nil {
		t.Fatal(err)
	}
	probe := samplestest.MustBuildWasm(t, "probe")
	done := make(chan *run)
	go func() { done <- MustRun(t, context.Background(), d, Spec(t, probe, "loop")) }()
	time.Sleep(500 * time.Millisecond)
	if err := d.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	(<-done).check(t, -1, sandbox.FailureCanceled)
	if _, err := d.Run(context.Background(), Spec(t, probe, "exit", "0")); cove.ErrorCode(err) != cove.Unavailable {
		t.Errorf("Run after Close: %v, want unavailable", err)
	}
}

// BenchmarkRunCached is a run of a compiled module: go-hello is a Go
// program, whose runtime start-up and data segments dominate; minimal is
// an empty _start, the driver's own cost per run.
func BenchmarkRunCached(b *testing.B) {
	for _, bb := range []struct {
		name   string
		module string
	}{{"go-hello", samplestest.MustBuildWasm(b, "hello")}, {"minimal", MustWriteModule(b, emptyBody)}} {
		b.Run(bb.name, func(b *testing.B) {
			d := MustOpenDriver(b, wasm.Config{})
			spec := Spec(b, bb.module)
			MustRun(b, context.Background(), d, spec).check(b, 0, sandbox.FailureNone)
			for b.Loop() {
				MustRun(b, context.Background(), d, spec)
			}
		})
	}
}

// BenchmarkCompile is a first run on a new driver, compiling the Go hello
// module, which is nearly all of it. With a warm disk cache, the compiled
// code is loaded instead.
func BenchmarkCompile(b *testing.B) {
	hello := samplestest.MustBuildWasm(b, "hello")
	for _, bb := range []struct {
		name     string
		cacheDir string
	}{{"no-disk-cache", ""}, {"disk-cache", b.TempDir()}} {
		b.Run(bb.name, func(b *testing.B) {
			spec := Spec(b, hello)
			firstRun := func() {
				d, err := wasm.New(wasm.Config{CacheDir: bb.cacheDir})
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close(context.Background())
				MustRun(b, context.Background(), d, spec).check(b, 0, sandbox.FailureNone)
			}
			if bb.cacheDir != "" {
				firstRun() // fill the disk cache
			}
			for b.Loop() {
				firstRun()
			}
		})
	}
}

// TestRunReleasesMemory checks a module's memory goes back to the system
// when its run ends, however it ended: the memory is mapped outside the
// Go heap, where nothing would collect it.
func TestRunReleasesMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts mappings in /proc/self/maps")
	}
	d := MustOpenDriver(t, wasm.Config{})
	probe := samplestest.MustBuildWasm(t, "probe")
	ok := Spec(t, probe, "exit", "0")
	oom := Spec(t, probe, "alloc")
	oom.Limits.MemoryBytes = 64 << 20
	MustRun(t, context.Background(), d, ok).check(t, 0, sandbox.FailureNone) // compiles
	before := mappings(t)
	for range 10 {
		MustRun(t, context.Background(), d, ok).check(t, 0, sandbox.FailureNone)
		if r := MustRun(t, context.Background(), d, oom); r.Failure != sandbox.FailureOOM {
			t.Fatalf("failure %q, want oom", r.Failure)
		}
	}
	// 20 runs that each kept theirs would leave 20 more; allow for the Go
	// runtime's own growth.
	if after := mappings(t); after > before+8 {
		t.Errorf("%d mappings after 20 runs, %d before: runs keep their memory", after, before)
	}
}

func mappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// TestRunOOMFromNoMemory checks the limit holds for a module whose memory
// starts empty: growing it past the limit is refused, as for any other.
func TestRunOOMFromNoMemory(t *testing.T) {
	d := MustOpenDriver(t, wasm.Config{})
	// _start grows a memory of 0 pages by 2,048 (128 MiB) and traps when
	// that is refused.
	body := []byte{
		0x00,             // no locals
		0x41, 0x80, 0x10, // i32.const 2048
		0x40, 0x00, // memory.grow
		0x41, 0x7f, // i32.const -1
		0x46,       // i32.eq
		0x04, 0x40, // if
		0x00, // unreachable
		0x0b, // end
		0x0b, // end
	}
	m := []byte{
		0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
		0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
		0x05, 0x03, 0x01, 0x00, 0x00, // memory section: one memory, min 0, no max
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00, // export _start
		0x0a, byte(len(body) + 2), 0x01, byte(len(body)), // code section, one body
	}
	path := filepath.Join(t.TempDir(), "grow.wasm")
	if err := os.WriteFile(path, append(m, body...), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := Spec(t, path)
	spec.Limits.MemoryBytes = 64 << 20
	r := MustRun(t, context.Background(), d, spec)
	if r.Failure != sandbox.FailureOOM {
		t.Fatalf("failure %q (%s), exit %d, want oom", r.Failure, r.Detail, r.ExitCode)
	}
	// Under the limit, the same growth succeeds.
	spec.Limits.MemoryBytes = 256 << 20
	MustRun(t, context.Background(), d, spec).check(t, 0, sandbox.FailureNone)
}
