package process_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/driver/process"
	"github.com/covecompute/cove/sandbox"
)

// MustDriver returns a driver, or skips the test where bubblewrap cannot
// sandbox (not installed, or user namespaces disabled).
func MustDriver(tb testing.TB) *process.Driver {
	tb.Helper()
	d := process.New(process.Config{})
	if err := d.Available(); err != nil {
		tb.Skipf("process driver unavailable here (apt-get install bubblewrap tini python3): %v", err)
	}
	return d
}

// MustDir returns an empty directory the sandbox user can reach. When tests
// run as root the sandbox runs as nobody, and t.TempDir's parent is 0700;
// a node's run directories need the same search permission.
func MustDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// MustWrite writes a file readable by the sandbox user.
func MustWrite(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// MustAlgorithm writes an algorithm file. Its mode is 0600 on purpose: the
// driver hands it to the sandbox by descriptor, so its host mode and
// directory do not matter.
func MustAlgorithm(tb testing.TB, name, body string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// run is one finished run and what it printed.
type run struct {
	res            sandbox.Result
	stdout, stderr bytes.Buffer
	outputDir      string
}

// MustRun runs spec, filling in the output directory and the streams.
func MustRun(tb testing.TB, ctx context.Context, d *process.Driver, spec sandbox.Spec) *run {
	tb.Helper()
	if spec.OutputDir == "" {
		spec.OutputDir = MustDir(tb)
	}
	r := &run{outputDir: spec.OutputDir}
	spec.Stdout, spec.Stderr = &r.stdout, &r.stderr
	if spec.RunID == "" {
		spec.RunID = "run1"
	}
	res, err := d.Run(ctx, spec)
	if err != nil {
		tb.Fatalf("Run: %v\nstderr:\n%s", err, r.stderr.String())
	}
	r.res = res
	return r
}

func python(tb testing.TB, body string) sandbox.Spec {
	return sandbox.Spec{Kind: "python", Algorithm: MustAlgorithm(tb, "main.py", body)}
}

// processesWith lists the host's processes whose command line contains
// marker: a run's leftovers, if any.
func processesWith(tb testing.TB, marker string) []string {
	tb.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(marker)) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

func TestDriver_Contract(t *testing.T) {
	d := process.New(process.Config{})
	if d.Name() != "process" {
		t.Errorf("Name = %q", d.Name())
	}
	if got := d.Kinds(); !slices.Equal(got, []string{"bin", "python"}) {
		t.Errorf("Kinds = %v", got)
	}
}

func TestAvailable_MissingBwrap(t *testing.T) {
	d := process.New(process.Config{Bwrap: "/nonexistent/bwrap"})
	err := d.Available()
	if cove.ErrorCode(err) != cove.Unavailable || !strings.Contains(cove.ErrorMessage(err), "apt-get install bubblewrap") {
		t.Fatalf("Available = %v, want unavailable naming bubblewrap", err)
	}
	if _, err := d.Run(t.Context(), sandbox.Spec{Kind: "bin"}); cove.ErrorCode(err) != cove.Unavailable {
		t.Fatalf("Run = %v, want unavailable", err)
	}
}

func TestAvailable_MissingPython(t *testing.T) {
	MustDriver(t)
	d := process.New(process.Config{Python: "/usr/bin/no-such-python"})
	if err := d.Available(); cove.ErrorCode(err) != cove.Unavailable || !strings.Contains(err.Error(), "python3") {
		t.Fatalf("Available = %v, want unavailable naming python3", err)
	}
}

func TestRun_PythonReadsCSVWritesOutput(t *testing.T) {
	d := MustDriver(t)
	in := MustDir(t)
	MustWrite(t, filepath.Join(in, "sales.csv"), []byte("region,amount\nnorth,10\nsouth,32\n"))
	spec := python(t, `
import csv, sys
with open("/cove/inputs/sales/sales.csv") as f:
    total = sum(int(row["amount"]) for row in csv.DictReader(f))
with open("/cove/outputs/total.txt", "w") as f:
    f.write(f"{total}\n")
import os
os.makedirs("/cove/outputs/sub", exist_ok=True)
open("/cove/outputs/sub/args.txt", "w").write(" ".join(sys.argv[1:]))
buf = bytearray(100 << 20)  # touched: counts in the peak
for i in range(0, len(buf), 4096):
    buf[i] = 1
print("total", total)
`)
	spec.Inputs = []sandbox.Input{{Name: "sales", Dir: in}}
	spec.Args = []string{"--flag", "two words"}
	r := MustRun(t, t.Context(), d, spec)
	if r.res.ExitCode != 0 || r.res.Failure != sandbox.FailureNone {
		t.Fatalf("result = %+v, stderr:\n%s", r.res, r.stderr.String())
	}
	if got := r.stdout.String(); got != "total 42\n" {
		t.Errorf("stdout = %q", got)
	}
	for name, want := range map[string]string{"total.txt": "42\n", "sub/args.txt": "--flag two words"} {
		got, err := os.ReadFile(filepath.Join(r.outputDir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	// The figures come from the algorithm, not only from bwrap.
	if r.res.PeakMemory < 100<<20 {
		t.Errorf("PeakMemory = %d, want at least the 100 MiB the algorithm touched", r.res.PeakMemory)
	}
	if r.res.CPUTime <= 0 || r.res.Wall <= 0 {
		t.Errorf("CPUTime = %s, Wall = %s", r.res.CPUTime, r.res.Wall)
	}
}

func TestRun_BinExitCodeKept(t *testing.T) {
	d := MustDriver(t)
	spec := sandbox.Spec{Kind: "bin", Algorithm: MustAlgorithm(t, "fail.sh", "#!/bin/sh\necho oops >&2\nexit 3\n")}
	r := MustRun(t, t.Context(), d, spec)
	if r.res.ExitCode != 3 || r.res.Failure != sandbox.FailureNone {
		t.Fatalf("result = %+v", r.res)
	}
	if r.stderr.String() != "oops\n" {
		t.Errorf("stderr = %q", r.stderr.String())
	}
}

func TestRun_NotExecutable(t *testing.T) {
	d := MustDriver(t)
	spec := sandbox.Spec{Kind: "bin", Algorithm: MustAlgorithm(t, "data.txt", "just text\n")}
	r := MustRun(t, t.Context(), d, spec)
	if r.res.Failure != sandbox.FailureInvalid || r.res.ExitCode != -1 {
		t.Fatalf("result = %+v, want invalid", r.res)
	}
}

func TestRun_InvalidSpec(t *testing.T) {
	d := MustDriver(t)
	algo := MustAlgorithm(t, "main.py", "pass\n")
	in := MustDir(t)
	tests := []struct {
		name string
		spec sandbox.Spec
	}{
		{"wasm kind", sandbox.Spec{Kind: "wasm", Algorithm: algo}},
		{"missing algorithm", sandbox.Spec{Kind: "python", Algorithm: "/nonexistent.py"}},
		{"dotted input", sandbox.Spec{Kind: "python", Algorithm: algo, Inputs: []sandbox.Input{{Name: "..", Dir: in}}}},
		{"slashed input", sandbox.Spec{Kind: "python", Algorithm: algo, Inputs: []sandbox.Input{{Name: "a/b", Dir: in}}}},
		{"duplicate input", sandbox.Spec{Kind: "python", Algorithm: algo, Inputs: []sandbox.Input{{Name: "a", Dir: in}, {Name: "a", Dir: in}}}},
		{"missing input dir", sandbox.Spec{Kind: "python", Algorithm: algo, Inputs: []sandbox.Input{{Name: "a", Dir: "/nonexistent"}}}},
		{"bad env", sandbox.Spec{Kind: "python", Algorithm: algo, Env: map[string]string{"A=B": "c"}}},
		{"negative limit", sandbox.Spec{Kind: "python", Algorithm: algo, Limits: sandbox.Limits{MemoryBytes: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.OutputDir = MustDir(t)
			if _, err := d.Run(t.Context(), tt.spec); cove.ErrorCode(err) != cove.Invalid {
				t.Fatalf("Run = %v, want invalid", err)
			}
		})
	}
}

func TestRun_InputUnreachableAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only a root node runs the sandbox as another user")
	}
	d := MustDriver(t)
	private := filepath.Join(t.TempDir(), "private")
	in := filepath.Join(private, "ds")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	spec := python(t, "pass\n")
	spec.Inputs = []sandbox.Input{{Name: "ds", Dir: in}}
	spec.OutputDir = MustDir(t)
	_, err := d.Run(t.Context(), spec)
	if cove.ErrorCode(err) != cove.Invalid || !strings.Contains(cove.ErrorMessage(err), "input ds") {
		t.Fatalf("Run = %v, want invalid naming input ds", err)
	}
}

func TestRun_Timeout(t *testing.T) {
	d := MustDriver(t)
	tests := []struct {
		name       string
		body       string
		limits     sandbox.Limits
		wantDetail string
		minCPU     time.Duration // the killed algorithm's CPU time is still counted
	}{
		// Sleeping uses no CPU: the wall clock stops it.
		{"wall clock", "import time\ntime.sleep(60)\n", sandbox.Limits{Duration: time.Second}, "time limit", 0},
		// Spinning reaches RLIMIT_CPU = ceil(0.1 CPUs × 10 s) = 1 s first,
		// unless the host is so loaded it gets less than 10% of a core.
		{"cpu time", "while True:\n    pass\n", sandbox.Limits{Duration: 10 * time.Second, CPUs: 0.1}, "CPU time limit", 900 * time.Millisecond},
		// Spinning with a CPU budget it cannot use up in time.
		{"wall clock spinning", "while True:\n    pass\n", sandbox.Limits{Duration: 2 * time.Second, CPUs: 8}, "time limit", 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := python(t, tt.body)
			spec.Limits = tt.limits
			r := MustRun(t, t.Context(), d, spec)
			if r.res.Failure != sandbox.FailureTimeout || r.res.ExitCode != -1 || !strings.Contains(r.res.Detail, tt.wantDetail) {
				t.Fatalf("result = %+v, want timeout (%s)", r.res, tt.wantDetail)
			}
			if r.res.CPUTime < tt.minCPU {
				t.Errorf("CPUTime = %s, want at least %s", r.res.CPUTime, tt.minCPU)
			}
			if r.res.Wall > tt.limits.Duration+5*time.Second {
				t.Errorf("Wall = %s, long past the limit", r.res.Wall)
			}
		})
	}
}

func TestRun_ContextDeadlineIsTimeout(t *testing.T) {
	d := MustDriver(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	r := MustRun(t, ctx, d, python(t, "import time\ntime.sleep(60)\n"))
	if r.res.Failure != sandbox.FailureTimeout {
		t.Fatalf("result = %+v, want timeout", r.res)
	}
}

func TestRun_Canceled(t *testing.T) {
	d := MustDriver(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(500*time.Millisecond, cancel)
	r := MustRun(t, ctx, d, python(t, "import time\ntime.sleep(60)\n"))
	if r.res.Failure != sandbox.FailureCanceled || r.res.ExitCode != -1 {
		t.Fatalf("result = %+v, want canceled", r.res)
	}
}

func TestRun_OutOfMemory(t *testing.T) {
	d := MustDriver(t)
	spec := python(t, "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n")
	spec.Limits.MemoryBytes = 256 << 20
	r := MustRun(t, t.Context(), d, spec)
	if r.res.Failure != sandbox.FailureOOM {
		t.Fatalf("result = %+v, want oom; stderr:\n%s", r.res, r.stderr.String())
	}
}

func TestRun_DiskFull(t *testing.T) {
	d := MustDriver(t)
	tests := []struct{ name, body string }{
		{"one big file", `
with open("/cove/outputs/big", "wb") as f:
    while True:
        f.write(b"x" * (1 << 20))
`},
		// Each file is under the limit; their total is not.
		{"many files", `
for i in range(100):
    with open(f"/cove/outputs/part{i}", "wb") as f:
        f.write(b"x" * (1 << 20))
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := python(t, tt.body)
			spec.Limits.DiskBytes = 4 << 20
			r := MustRun(t, t.Context(), d, spec)
			if r.res.Failure != sandbox.FailureDiskFull {
				t.Fatalf("result = %+v, want disk_full; stderr:\n%s", r.res, r.stderr.String())
			}
			// What was written up to the limit still reaches the host.
			var total int64
			entries, _ := os.ReadDir(r.outputDir)
			for _, e := range entries {
				fi, err := e.Info()
				if err == nil {
					total += fi.Size()
				}
			}
			if total == 0 || total > 4<<20 {
				t.Errorf("outputs hold %d bytes, want some and at most 4 MiB", total)
			}
		})
	}
}

func TestRun_NetworkDenied(t *testing.T) {
	d := MustDriver(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	body := fmt.Sprintf(`
import socket
try:
    socket.create_connection(("127.0.0.1", %d), timeout=3).close()
    print("connected")
except OSError as e:
    print("blocked")
`, port)

	r := MustRun(t, t.Context(), d, python(t, body))
	if got := strings.TrimSpace(r.stdout.String()); got != "blocked" || accepted.Load() != 0 {
		t.Fatalf("without network: stdout %q, host accepted %d connections", got, accepted.Load())
	}

	// The same algorithm reaches the host when the policy allows network.
	spec := python(t, body)
	spec.Network = true
	r = MustRun(t, t.Context(), d, spec)
	if got := strings.TrimSpace(r.stdout.String()); got != "connected" {
		t.Fatalf("with network: stdout %q, stderr %s", got, r.stderr.String())
	}
}

func TestRun_HostHidden(t *testing.T) {
	d := MustDriver(t)
	other := MustDir(t) // another run's directory
	MustWrite(t, filepath.Join(other, "secret.csv"), []byte("secret"))
	outputDir := MustDir(t)
	spec := python(t, `
import os, sys
def probe(p):
    try:
        if os.path.isdir(p):
            os.listdir(p)
            return "listed"
        open(p, "rb").read(1)
        return "read"
    except FileNotFoundError:
        return "absent"
    except PermissionError:
        return "denied"
    except OSError as e:
        return "error " + str(e)
for p in sys.argv[1:]:
    print(p, probe(p))
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("pids", len(pids), open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode())
print("fds", sorted(os.listdir("/proc/self/fd")))
print("user", os.getuid(), os.getgid())
`)
	spec.Args = []string{"/etc/shadow", "/etc/sudoers", "/root", "/home", "/sys", "/var", "/run",
		filepath.Dir(outputDir), outputDir, other, filepath.Join(other, "secret.csv")}
	spec.OutputDir = outputDir
	r := MustRun(t, t.Context(), d, spec)
	lines := strings.Split(strings.TrimSpace(r.stdout.String()), "\n")
	if len(lines) != len(spec.Args)+3 {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", r.stdout.String(), r.stderr.String())
	}
	for _, line := range lines[:len(spec.Args)] {
		if !strings.HasSuffix(line, " absent") && !strings.HasSuffix(line, " denied") {
			t.Errorf("reachable in the sandbox: %s", line)
		}
	}
	// A fresh /proc: tini as pid 1, the algorithm, nothing of the host.
	if want := "pids 2 /usr/bin/tini"; lines[len(lines)-3] != want {
		t.Errorf("got %q, want %q", lines[len(lines)-3], want)
	}
	// No descriptor of the driver leaks in (3 is listdir's own).
	if want := "fds ['0', '1', '2', '3']"; lines[len(lines)-2] != want {
		t.Errorf("got %q, want %q", lines[len(lines)-2], want)
	}
	if want := "user 1000 1000"; lines[len(lines)-1] != want {
		t.Errorf("got %q, want %q", lines[len(lines)-1], want)
	}
}

func TestRun_ReadOnly(t *testing.T) {
	d := MustDriver(t)
	in := MustDir(t)
	MustWrite(t, filepath.Join(in, "data.csv"), []byte("a,b\n"))
	spec := python(t, `
import os
def attempt(name, f):
    try:
        f()
        print(name, "written")
    except OSError as e:
        print(name, "refused")
attempt("new input", lambda: open("/cove/inputs/ds/new.csv", "w").write("x"))
attempt("append input", lambda: open("/cove/inputs/ds/data.csv", "a").write("x"))
attempt("remove input", lambda: os.remove("/cove/inputs/ds/data.csv"))
attempt("algorithm", lambda: open("/cove/algorithm/main.py", "a").write("x"))
attempt("root", lambda: open("/evil", "w").write("x"))
attempt("usr", lambda: open("/usr/evil", "w").write("x"))
attempt("dev", lambda: open("/dev/evil", "w").write("x"))
attempt("tmp", lambda: open("/tmp/ok", "w").write("x"))
`)
	spec.Inputs = []sandbox.Input{{Name: "ds", Dir: in}}
	r := MustRun(t, t.Context(), d, spec)
	want := "new input refused\nappend input refused\nremove input refused\nalgorithm refused\n" +
		"root refused\nusr refused\ndev refused\ntmp written\n"
	if got := r.stdout.String(); got != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s\nstderr:\n%s", got, want, r.stderr.String())
	}
	if got, _ := os.ReadFile(filepath.Join(in, "data.csv")); string(got) != "a,b\n" {
		t.Errorf("input changed: %q", got)
	}
}

func TestRun_EnvIsSpecEnvOnly(t *testing.T) {
	d := MustDriver(t)
	t.Setenv("COVE_HOST_SECRET", "leak")
	spec := python(t, "import os\nfor k in sorted(os.environ):\n    print(k, os.environ[k])\n")
	spec.Env = map[string]string{"FOO": "bar baz", "LANG": "C.UTF-8"}
	r := MustRun(t, t.Context(), d, spec)
	// bwrap always sets PWD, to the working directory.
	if want := "FOO bar baz\nLANG C.UTF-8\nPWD /cove/outputs\n"; r.stdout.String() != want {
		t.Fatalf("environment:\n%s\nwant:\n%s", r.stdout.String(), want)
	}
}

func TestRun_ForkBombContained(t *testing.T) {
	d := MustDriver(t)

	t.Run("fork until refused", func(t *testing.T) {
		marker := fmt.Sprintf("cove-fork-%d", rand.Int64())
		spec := python(t, `
import os, sys, time
children = 0
try:
    for _ in range(1000):
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
except OSError:
    pass
print(children)
`)
		spec.Args = []string{marker}
		spec.Limits.Processes = 20
		r := MustRun(t, t.Context(), d, spec)
		var children int
		if _, err := fmt.Sscan(r.stdout.String(), &children); err != nil || children < 1 || children >= 20 {
			t.Fatalf("forked %d children (stdout %q, err %v), want 1..19", children, r.stdout.String(), err)
		}
		if left := processesWith(t, marker); len(left) > 0 {
			t.Fatalf("processes outlived the run: %v", left)
		}
	})

	t.Run("shell bomb", func(t *testing.T) {
		name := fmt.Sprintf("bomb%d.sh", rand.Int64())
		spec := sandbox.Spec{Kind: "bin", Algorithm: MustAlgorithm(t, name, "#!/bin/sh\nb() { b | b & }\nb\nwait\nsleep 600\n")}
		spec.Limits = sandbox.Limits{Processes: 32, Duration: 3 * time.Second}
		r := MustRun(t, t.Context(), d, spec)
		if r.res.Wall > 15*time.Second {
			t.Errorf("Wall = %s", r.res.Wall)
		}
		if left := processesWith(t, name); len(left) > 0 {
			t.Fatalf("processes outlived the run: %v", left)
		}
	})
}

func TestRun_NoOrphans(t *testing.T) {
	d := MustDriver(t)
	tests := []struct {
		name   string
		limits sandbox.Limits
		exit   string
	}{
		{"algorithm exits", sandbox.Limits{}, "exit 0"},
		{"algorithm times out", sandbox.Limits{Duration: time.Second}, "sleep 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := fmt.Sprintf("%d.5", 100000+rand.IntN(100000)) // a sleep argument no one else uses
			body := fmt.Sprintf("#!/bin/sh\nsleep %s &\n(setsid sleep %s &)\nnohup sleep %s >/dev/null 2>&1 &\n%s\n", marker, marker, marker, tt.exit)
			spec := sandbox.Spec{Kind: "bin", Algorithm: MustAlgorithm(t, "bg.sh", body), Limits: tt.limits}
			MustRun(t, t.Context(), d, spec)
			if left := processesWith(t, marker); len(left) > 0 {
				t.Fatalf("processes outlived the run: %v", left)
			}
		})
	}
}

func TestRun_StdoutByteExact(t *testing.T) {
	d := MustDriver(t)
	in := MustDir(t)
	blob := make([]byte, 3<<20)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(blob)
	MustWrite(t, filepath.Join(in, "blob.bin"), blob)
	spec := python(t, "import sys\nsys.stdout.buffer.write(open('/cove/inputs/b/blob.bin', 'rb').read())\n")
	spec.Inputs = []sandbox.Input{{Name: "b", Dir: in}}
	r := MustRun(t, t.Context(), d, spec)
	if !bytes.Equal(r.stdout.Bytes(), blob) {
		t.Fatalf("stdout differs: %d bytes, want %d", r.stdout.Len(), len(blob))
	}
}

func TestRun_OutputLinksDropped(t *testing.T) {
	d := MustDriver(t)
	spec := python(t, `
import os
os.symlink("/etc/passwd", "/cove/outputs/passwd")
os.symlink("../../..", "/cove/outputs/up")
os.mkfifo("/cove/outputs/fifo")
open("/cove/outputs/ok.txt", "w").write("ok")
`)
	r := MustRun(t, t.Context(), d, spec)
	entries, err := os.ReadDir(r.outputDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"ok.txt"}) {
		t.Fatalf("outputs = %v, want only ok.txt", names)
	}
	if !strings.Contains(r.stderr.String(), "is not a regular file or directory") {
		t.Errorf("stderr does not say what was dropped: %q", r.stderr.String())
	}
}

func TestRun_Concurrent(t *testing.T) {
	d := MustDriver(t)
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			spec := python(t, "import sys\nopen('/cove/outputs/n', 'w').write(sys.argv[1])\n")
			spec.Args = []string{fmt.Sprint(i)}
			r := MustRun(t, t.Context(), d, spec)
			if got, _ := os.ReadFile(filepath.Join(r.outputDir, "n")); string(got) != fmt.Sprint(i) {
				t.Fatalf("output %q, want %d", got, i)
			}
		})
	}
}

// BenchmarkRunTrue measures the driver's overhead: a whole sandbox around
// /usr/bin/true.
func BenchmarkRunTrue(b *testing.B) {
	d := MustDriver(b)
	out := MustDir(b)
	spec := sandbox.Spec{RunID: "bench", Kind: "bin", Algorithm: "/usr/bin/true", OutputDir: out}
	for b.Loop() {
		res, err := d.Run(b.Context(), spec)
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("Run = %+v, %v", res, err)
		}
	}
}
