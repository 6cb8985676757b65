// Package samples holds Cove's sample algorithms and data, for tests and
// for the demo workspace that `cove serve --dev` seeds:
//
//   - hello, wordcount, csvstats: Go programs built for WebAssembly
//     (GOOS=wasip1, GOARCH=wasm) that read /cove/inputs and write
//     /cove/outputs;
//   - probe: a program that misbehaves on request, for driver tests;
//   - python/stats.py: csvstats in Python, for the process driver;
//   - data/people.csv: a synthetic dataset.
//
// The Go sources are embedded, so BuildWasm works from any binary on a
// host with the Go toolchain, not only from a source checkout.
package samples

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/covecompute/cove"
)

// PeopleCSV is data/people.csv: 200 synthetic people (name, age,
// height_cm, income) made by data/gen.go from a fixed seed. Callers must
// not modify it.
//
//go:embed data/people.csv
var PeopleCSV []byte

// StatsPy is python/stats.py, the Python twin of the csvstats sample.
// Callers must not modify it.
//
//go:embed python/stats.py
var StatsPy []byte

//go:embed hello wordcount csvstats probe
var sources embed.FS

// goMod makes each sample its own module when built from a temporary
// directory. go 1.22 is the oldest version with the loop semantics the
// samples assume; the toolchain that builds them may be any later one.
const goMod = "module example.com/cove/samples/%s\n\ngo 1.22\n"

// Names returns the names of the Go samples BuildWasm builds, probe
// included: it is for tests, not for a demo catalog.
func Names() []string {
	entries, _ := sources.ReadDir(".")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// BuildWasm compiles the Go sample name for GOOS=wasip1 GOARCH=wasm with
// the local go command and returns the path of the module, which it places
// in outDir (created if missing) under a name holding a digest of the
// sources and of the Go version. When that file exists already, BuildWasm
// returns it without building: callers that keep outDir across runs, such
// as tests and `cove serve --dev`, build each version once.
//
// It returns a NotFound error for an unknown name, Unavailable when no go
// command is in PATH, and Internal when the build fails.
func BuildWasm(ctx context.Context, name, outDir string) (string, error) {
	src, err := sampleFiles(name)
	if err != nil {
		return "", err
	}
	// go build runs in a scratch directory, so a relative -o would land
	// there instead of in outDir.
	if outDir, err = filepath.Abs(outDir); err != nil {
		return "", cove.Wrap(err, "cannot resolve the sample output directory")
	}
	out := filepath.Join(outDir, name+"-"+digest(name, src)[:16]+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", cove.Errorf(cove.Unavailable, "building the %s sample needs the Go toolchain (go) in PATH", name)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", cove.Wrap(err, "cannot create the sample output directory")
	}

	work, err := os.MkdirTemp("", "cove-sample-"+name+"-")
	if err != nil {
		return "", cove.Wrap(err, "cannot create a build directory")
	}
	defer os.RemoveAll(work)
	for p, b := range src {
		dst := filepath.Join(work, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", cove.Wrap(err, "cannot write the sample sources")
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return "", cove.Wrap(err, "cannot write the sample sources")
		}
	}

	// Build next to the final name, then rename: concurrent builders (test
	// packages run in parallel) never see a half-written module.
	tmp, err := os.CreateTemp(outDir, name+"-*.wasm.tmp")
	if err != nil {
		return "", cove.Wrap(err, "cannot create the sample module")
	}
	tmp.Close()
	defer os.Remove(tmp.Name())

	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-o", tmp.Name(), ".")
	cmd.Dir = work
	// Later entries win over the inherited ones. GOTOOLCHAIN=local and
	// GOPROXY=off keep the build offline: the samples use only the
	// standard library. GOFLAGS is cleared so a user's -mod=vendor or
	// similar does not leak into this throwaway module.
	cmd.Env = append(os.Environ(),
		"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0",
		"GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local", "GOPROXY=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", cove.Wrap(fmt.Errorf("go build: %w: %s", err, strings.TrimSpace(string(b))),
			fmt.Sprintf("building the %s sample failed", name))
	}
	if fi, err := os.Stat(tmp.Name()); err != nil || fi.Size() == 0 {
		return "", cove.Errorf(cove.Internal, "building the %s sample produced no module", name)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", cove.Wrap(err, "cannot move the sample module into place")
	}
	return out, nil
}

// sampleFiles returns the sources of sample name, keyed by slash path
// inside the sample's own module, including its go.mod.
func sampleFiles(name string) (map[string][]byte, error) {
	if name == "" || strings.ContainsAny(name, `/\.`) {
		return nil, cove.Errorf(cove.NotFound, "no sample named %q", name)
	}
	files := map[string][]byte{"go.mod": fmt.Appendf(nil, goMod, name)}
	err := fs.WalkDir(sources, name, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := sources.ReadFile(p)
		files[strings.TrimPrefix(p, name+"/")] = b
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, cove.Errorf(cove.NotFound, "no sample named %q", name)
	}
	if err != nil {
		return nil, cove.Wrap(err, "cannot read the embedded sample sources")
	}
	return files, nil
}

// digest names one build: the sources and the Go version, taken from the
// running binary because the toolchain that built it is the one most
// likely in PATH. A different go in PATH costs at worst a stale-named
// module of the same sources, never different sources.
func digest(name string, files map[string][]byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "cove-sample\x00%s\x00%s\x00", name, runtime.Version())
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		fmt.Fprintf(h, "%s\x00%d\x00", path.Clean(p), len(files[p]))
		h.Write(files[p])
	}
	return hex.EncodeToString(h.Sum(nil))
}
