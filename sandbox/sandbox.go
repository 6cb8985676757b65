// Package sandbox defines how Cove runs one algorithm over its inputs in
// isolation: the Spec a driver is given, the Result it reports, and the
// Driver contract that driver/wasm, driver/process and later drivers meet.
//
// The agent is the only caller. It has already fetched and verified the
// algorithm and the datasets; a driver only isolates and runs.
package sandbox

import (
	"context"
	"io"
	"time"
)

// Paths inside every sandbox, whatever the driver.
const (
	InputsDir    = "/cove/inputs"    // one read-only directory per dataset: /cove/inputs/<name>/
	OutputsDir   = "/cove/outputs"   // the only writable place the results are taken from
	AlgorithmDir = "/cove/algorithm" // the algorithm's files, read-only
)

// Spec is one run of one algorithm.
type Spec struct {
	// RunID names the sandbox; a driver uses it for process names, cgroups
	// or cache keys, never as a path component without checking it.
	RunID string
	// Algorithm is the host path of the algorithm file: a .wasm module, an
	// executable, or a Python script.
	Algorithm string
	// Kind is "wasm", "bin" or "python".
	Kind string
	// AlgorithmSHA256 is the verified hex digest of the algorithm, usable as
	// a cache key for compiled code.
	AlgorithmSHA256 string
	// Args are passed to the algorithm after its name.
	Args []string
	// Env is the algorithm's whole environment; nothing of the host's leaks.
	Env map[string]string
	// Inputs are host directories, each mounted read-only at
	// InputsDir/<Name>.
	Inputs []Input
	// OutputDir is the host directory mounted writable at OutputsDir. It is
	// empty when the run starts.
	OutputDir string
	// Limits bound what the algorithm may use.
	Limits Limits
	// Network allows network access; off unless the dataset policy says so.
	Network bool
	// Stdout and Stderr receive the algorithm's output as it is written.
	Stdout, Stderr io.Writer
}

// Input is one dataset as the sandbox sees it.
type Input struct {
	Name string // directory name under InputsDir; [a-z0-9_-], no dots or slashes
	Dir  string // host directory holding the dataset's files
}

// Limits bound a run. Zero means the driver's default.
type Limits struct {
	CPUs        float64       // cores; drivers that cannot cap CPU share enforce CPU time = CPUs * Duration
	MemoryBytes int64         // peak memory
	DiskBytes   int64         // total bytes written under OutputsDir
	Duration    time.Duration // wall-clock limit; the context deadline is the hard stop
	Processes   int           // processes and threads (process driver)
}

// Failure says why a run stopped early. Empty when the algorithm ran to its
// own exit, whatever its exit code.
type Failure string

// Failures a driver reports. The computation domain maps them to run
// failure reasons.
const (
	FailureNone     Failure = ""
	FailureTimeout  Failure = "timeout"   // Limits.Duration or the context deadline passed
	FailureOOM      Failure = "oom"       // Limits.MemoryBytes reached
	FailureDiskFull Failure = "disk_full" // Limits.DiskBytes reached
	FailureInvalid  Failure = "invalid"   // the algorithm is not runnable (not WebAssembly, not executable, ...)
	FailureCanceled Failure = "canceled"  // the context was canceled before the deadline: stopped by the user
)

// Result is what a driver reports when the algorithm has stopped.
type Result struct {
	ExitCode   int           // the algorithm's exit code; -1 when it did not exit by itself
	Failure    Failure       // why it stopped early, if it did
	Detail     string        // a user-safe sentence on the failure, for the run's events
	CPUTime    time.Duration // user + system CPU time
	PeakMemory int64         // bytes
	Wall       time.Duration
}

// Driver runs algorithms in isolation.
type Driver interface {
	// Name is the driver's name as nodes advertise it: "wasm", "process".
	Name() string
	// Kinds lists the algorithm kinds the driver runs.
	Kinds() []string
	// Available returns nil when the driver can run on this host, and an
	// error saying what is missing otherwise (for example bwrap).
	Available() error
	// Run runs spec and blocks until the algorithm has stopped and every
	// process it started is gone. It returns an error only when the driver
	// itself failed; the algorithm's own failures are in Result.
	Run(ctx context.Context, spec Spec) (Result, error)
}
