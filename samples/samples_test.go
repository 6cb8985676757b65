package samples_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/driver/wasm"
	"github.com/covecompute/cove/samples"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sandbox"
)

func TestBuildWasm(t *testing.T) {
	for _, name := range samples.Names() {
		t.Run(name, func(t *testing.T) {
			path := samplestest.MustBuildWasm(t, name)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("\x00asm\x01\x00\x00\x00")) {
				t.Fatalf("%s is not a WebAssembly module", path)
			}
			// A second build of the same sources into the same directory
			// is the file already there.
			again, err := samples.BuildWasm(context.Background(), name, filepath.Dir(path))
			if err != nil || again != path {
				t.Errorf("BuildWasm again = %q, %v; want %q", again, err, path)
			}
		})
	}
}

func TestBuildWasmUnknown(t *testing.T) {
	for _, name := range []string{"nope", "", "../samples", "data"} {
		if _, err := samples.BuildWasm(context.Background(), name, t.TempDir()); cove.ErrorCode(err) != cove.NotFound {
			t.Errorf("BuildWasm(%q): %v, want not found", name, err)
		}
	}
}

func TestPeopleCSV(t *testing.T) {
	records, err := csv.NewReader(bytes.NewReader(samples.PeopleCSV)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 201 || strings.Join(records[0], ",") != "name,age,height_cm,income" {
		t.Errorf("%d records, header %v", len(records), records[0])
	}
}

func TestHello(t *testing.T) {
	out := MustRunWasm(t, "hello", t.TempDir())
	b, err := os.ReadFile(filepath.Join(out, "hello.txt"))
	if err != nil || string(b) != "hello from cove: 1 dataset(s)\n" {
		t.Errorf("hello.txt = %q, %v", b, err)
	}
}

// TestCSVStatsMatchesPython runs the Go sample in the wasm sandbox and the
// Python one on the host over the same data: the two must agree, as they
// promise to, so either can serve as the demo algorithm.
func TestCSVStatsMatchesPython(t *testing.T) {
	data := MustPeopleDir(t)
	goOut := MustRunWasm(t, "csvstats", data)
	got := MustReadStats(t, filepath.Join(goOut, "stats.json"))

	if len(got.Files) != 1 || got.Files[0].Path != "people/people.csv" || got.Files[0].Rows != 200 {
		t.Fatalf("stats = %+v", got)
	}
	cols := got.Files[0].Columns
	if len(cols) != 3 || cols[0].Name != "age" || cols[0].Count != 200 || cols[2].Name != "income" || cols[2].Count != 195 {
		t.Fatalf("columns = %+v", cols)
	}

	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	script := filepath.Join(t.TempDir(), "stats.py")
	if err := os.WriteFile(script, samples.StatsPy, 0o644); err != nil {
		t.Fatal(err)
	}
	pyOut := t.TempDir()
	if b, err := exec.Command(python, script, filepath.Dir(data), pyOut).CombinedOutput(); err != nil {
		t.Fatalf("stats.py: %v\n%s", err, b)
	}
	want := MustReadStats(t, filepath.Join(pyOut, "stats.json"))
	if len(want.Files) != 1 || len(want.Files[0].Columns) != len(cols) || want.Files[0].Rows != 200 {
		t.Fatalf("python stats = %+v", want)
	}
	for i, w := range want.Files[0].Columns {
		g := cols[i]
		// Both run the same float operations in the same order; the
		// tolerance only allows for a compiler fusing multiply-adds.
		close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }
		if g.Name != w.Name || g.Count != w.Count || !close(g.Min, w.Min) || !close(g.Max, w.Max) ||
			!close(g.Mean, w.Mean) || !close(g.Stddev, w.Stddev) {
			t.Errorf("column %d: Go %+v, Python %+v", i, g, w)
		}
	}
}

type stats struct {
	Files []struct {
		Path    string
		Rows    int
		Columns []struct {
			Name                   string
			Count                  int
			Min, Max, Mean, Stddev float64
		}
	}
}

func MustReadStats(tb testing.TB, path string) stats {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var s stats
	if err := json.Unmarshal(b, &s); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return s
}

// MustPeopleDir returns a dataset directory named people holding
// people.csv.
func MustPeopleDir(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "people")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "people.csv"), samples.PeopleCSV, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// MustRunWasm runs sample with input as the dataset "people" and returns
// its output directory. Drivers share the compilation cache of the
// driver/wasm tests.
func MustRunWasm(tb testing.TB, sample, input string) string {
	tb.Helper()
	d, err := wasm.New(wasm.Config{CacheDir: filepath.Join(os.TempDir(), "cove-wasm-test-cache")})
	if err != nil {
		tb.Fatal(err)
	}
	defer d.Close(context.Background())
	var stdout, stderr bytes.Buffer
	spec := sandbox.Spec{
		RunID:     "run_" + sample,
		Algorithm: samplestest.MustBuildWasm(tb, sample),
		Kind:      "wasm",
		Inputs:    []sandbox.Input{{Name: "people", Dir: input}},
		OutputDir: tb.TempDir(),
		Stdout:    &stdout,
		Stderr:    &stderr,
	}
	res, err := d.Run(context.Background(), spec)
	if err != nil || res.ExitCode != 0 || res.Failure != sandbox.FailureNone {
		tb.Fatalf("%s: %+v, %v\nstdout: %s\nstderr: %s", sample, res, err, stdout.String(), stderr.String())
	}
	return spec.OutputDir
}

// TestBuildWasmRelativeDir builds into a relative directory, as
// `cove serve --dev` does with the default data dir.
func TestBuildWasmRelativeDir(t *testing.T) {
	t.Chdir(t.TempDir())
	path, err := samples.BuildWasm(context.Background(), "hello", "out")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 8 || string(b[:4]) != "\x00asm" {
		t.Fatalf("module at %s: %d bytes, %v", path, len(b), err)
	}
}
