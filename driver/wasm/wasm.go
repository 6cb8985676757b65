// Package wasm is the sandbox driver for WebAssembly: it runs WASI
// preview 1 command modules (wasi_snapshot_preview1, such as Go programs
// built with GOOS=wasip1 GOARCH=wasm) in the node's own process with
// wazero.
//
// Isolation is WebAssembly's own: a module touches nothing but its linear
// memory and the host functions it imports, and the driver lets it import
// only WASI, configured per run with
//
//   - the datasets read-only under /cove/inputs/<name> and the run's output
//     directory under /cove/outputs, and no other file (see fs.go);
//   - no network: wasip1 cannot create sockets, and no listener is
//     pre-opened, so Spec.Network changes nothing;
//   - args [algorithm file name, Spec.Args...] and exactly Spec.Env;
//   - stdout and stderr to the Spec's writers, stdin empty;
//   - the real wall and monotonic clocks, a sleep that ends when the run
//     is stopped, and crypto/rand for random_get.
//
// Limits: MemoryBytes caps the module's linear memory (memory.go);
// Duration and the context deadline stop the module wherever it is,
// because the runtime checks the context in loops and calls
// (WithCloseOnContextDone); DiskBytes caps the bytes written under
// /cove/outputs (fs.go); CPUs below one cap CPU time at CPUs × Duration,
// as a module uses one core at most.
//
// Results: CPUTime is the CPU time of the OS thread the module ran on,
// pinned for the run (Linux); elsewhere it is the whole process's, an
// approximation that is exact only for a run alone on its node.
// PeakMemory is the size of the module's linear memory at the end, which
// is its peak since WebAssembly memory never shrinks; the host memory of
// the compiled code and of wazero itself is not counted.
//
// One wazero runtime serves every run. Compiled modules are kept in memory
// by the algorithm's SHA-256 (cache.go) and optionally on disk
// (Config.CacheDir), so only the first run of a module pays to compile it.
package wasm

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/sandbox"
)

// Limits the driver applies where neither the Spec nor Config.Defaults sets
// one.
const (
	DefaultMemoryBytes = 1 << 30
	DefaultDiskBytes   = 1 << 30
	DefaultDuration    = time.Hour
)

// DefaultMaxCachedModules is the compiled-module cache bound when
// Config.MaxCachedModules is zero. A compiled Go module of a few MB takes
// a few tens of MB of host memory.
const DefaultMaxCachedModules = 16

// cpuCheckInterval is how often the CPU-time cap is checked, and so by how
// much a module may overrun it.
const cpuCheckInterval = 20 * time.Millisecond

// Causes of a stop the driver makes itself.
var (
	errDiskFull     = errors.New("disk quota exceeded")
	errCPUTime      = errors.New("CPU time exceeded")
	errDriverClosed = errors.New("driver closed")
)

// errMemoryAtStart stops a module whose initial memory is over its limit
// before its code runs.
var errMemoryAtStart = errors.New("initial memory over the limit")

// Config configures a Driver.
type Config struct {
	// CacheDir, when set, keeps wazero's compiled code in this directory,
	// so a node that restarts does not compile again the modules it ran
	// before. Empty keeps compiled code in memory only.
	CacheDir string
	// MaxCachedModules bounds the compiled modules kept in memory, least
	// recently used out first. Zero means DefaultMaxCachedModules.
	MaxCachedModules int
	// Defaults are the limits of runs whose Spec leaves one zero. Its own
	// zero fields take DefaultMemoryBytes, DefaultDiskBytes and
	// DefaultDuration; CPUs defaults to one core, which a module cannot
	// exceed, and Processes does not apply.
	Defaults sandbox.Limits
}

// Driver runs WebAssembly modules. It is safe for concurrent use; Close
// it to release the runtime.
type Driver struct {
	runtime  wazero.Runtime
	compiled wazero.CompilationCache // nil without Config.CacheDir
	cache    *cache
	defaults sandbox.Limits

	stopping context.Context // done when Close starts: runs in progress stop
	stop     context.CancelFunc

	mu     sync.Mutex
	closed bool
	runs   sync.WaitGroup
}

var _ sandbox.Driver = (*Driver)(nil)

// New returns a Driver with its wazero runtime ready. It returns an Invalid
// error for a bad Config and an Internal one when the disk cache cannot be
// opened.
func New(cfg Config) (*Driver, error) {
	if cfg.MaxCachedModules < 0 {
		return nil, cove.Errorf(cove.Invalid, "MaxCachedModules must not be negative")
	}
	if err := validateLimits(cfg.Defaults); err != nil {
		return nil, err
	}
	d := &Driver{cache: newCache(cmp.Or(cfg.MaxCachedModules, DefaultMaxCachedModules))}
	d.defaults = sandbox.Limits{
		CPUs:        cmp.Or(cfg.Defaults.CPUs, 1),
		MemoryBytes: cmp.Or(cfg.Defaults.MemoryBytes, DefaultMemoryBytes),
		DiskBytes:   cmp.Or(cfg.Defaults.DiskBytes, DefaultDiskBytes),
		Duration:    cmp.Or(cfg.Defaults.Duration, DefaultDuration),
	}

	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(true)
	if cfg.CacheDir != "" {
		cc, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, cove.Wrap(err, "cannot open the wasm compilation cache")
		}
		d.compiled = cc
		rc = rc.WithCompilationCache(cc)
	}
	ctx := context.Background()
	d.runtime = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, d.runtime); err != nil {
		d.close(ctx)
		return nil, cove.Wrap(err, "cannot start the WASI host module")
	}
	d.stopping, d.stop = context.WithCancel(ctx)
	return d, nil
}

// Name returns "wasm".
func (*Driver) Name() string { return "wasm" }

// Kinds returns ["wasm"].
func (*Driver) Kinds() []string { return []string{"wasm"} }

// Available returns nil: the driver is pure Go and needs nothing from the
// host. Where wazero has no compiler for the platform it interprets, more
// slowly.
func (*Driver) Available() error { return nil }

// Close stops runs still in progress, which then report FailureCanceled,
// waits for them until ctx is done, and releases the runtime. Runs started
// after Close fail with Unavailable.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()

	d.stop()
	done := make(chan struct{})
	go func() { d.runs.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = cove.Wrap(ctx.Err(), "wasm runs did not stop in time")
	}
	return errors.Join(err, d.close(ctx))
}

func (d *Driver) close(ctx context.Context) error {
	err := d.runtime.Close(context.WithoutCancel(ctx))
	if d.compiled != nil {
		err = errors.Join(err, d.compiled.Close(context.WithoutCancel(ctx)))
	}
	if err != nil {
		return cove.Wrap(err, "cannot close the wasm runtime")
	}
	return nil
}

// Run runs spec's module and blocks until it has stopped. A file that is
// not a runnable WASI module is a Result with FailureInvalid, since that is
// the algorithm's fault. Errors are the caller's or the host's: Invalid for
// a spec the driver cannot accept (another Kind, a bad input name, a
// digest that does not match the file), Unavailable after Close, Internal
// when the algorithm, an input or the output directory cannot be opened.
func (d *Driver) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	if err := d.enter(); err != nil {
		return sandbox.Result{}, err
	}
	defer d.runs.Done()
	if err := validate(spec); err != nil {
		return sandbox.Result{}, err
	}
	if ctx.Err() != nil {
		return stopped(ctx, context.Cause(ctx), 0), nil
	}

	mod, release, err := d.compile(ctx, spec)
	var bad *notRunnable
	switch {
	case errors.As(err, &bad):
		return sandbox.Result{ExitCode: -1, Failure: sandbox.FailureInvalid, Detail: bad.detail}, nil
	case err != nil && ctx.Err() != nil:
		return stopped(ctx, context.Cause(ctx), 0), nil
	case err != nil:
		return sandbox.Result{}, err
	}
	defer release()
	return d.run(ctx, spec, d.limits(spec.Limits), mod)
}

func (d *Driver) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return cove.Errorf(cove.Unavailable, "the wasm driver is closed")
	}
	d.runs.Add(1)
	return nil
}

// limits fills the zero fields of l from the driver's defaults.
func (d *Driver) limits(l sandbox.Limits) sandbox.Limits {
	return sandbox.Limits{
		CPUs:        cmp.Or(l.CPUs, d.defaults.CPUs),
		MemoryBytes: cmp.Or(l.MemoryBytes, d.defaults.MemoryBytes),
		DiskBytes:   cmp.Or(l.DiskBytes, d.defaults.DiskBytes),
		Duration:    cmp.Or(l.Duration, d.defaults.Duration),
	}
}

// notRunnable is a module the driver will not run, with a sentence for
// the user saying why.
type notRunnable struct{ detail string }

func (e *notRunnable) Error() string { return e.detail }

// compile returns spec's compiled module from the cache, compiling it on
// a miss, and the release func the caller calls when the run is over.
//
// The cache key is Spec.AlgorithmSHA256, which the agent has verified, so
// a hit does not even read the file. A miss hashes what it reads and
// refuses a file that does not match: a wrong key would otherwise poison
// the cache for every later run of the real module.
func (d *Driver) compile(ctx context.Context, spec sandbox.Spec) (wazero.CompiledModule, func(), error) {
	key := strings.ToLower(spec.AlgorithmSHA256)
	var bin []byte
	if key == "" {
		var err error
		if bin, err = readAlgorithm(spec.Algorithm); err != nil {
			return nil, nil, err
		}
		sum := sha256.Sum256(bin)
		key = hex.EncodeToString(sum[:])
	}
	mod, release, _, err := d.cache.acquire(ctx, key, func() (wazero.CompiledModule, error) {
		if bin == nil {
			var err error
			if bin, err = readAlgorithm(spec.Algorithm); err != nil {
				return nil, err
			}
			if sum := sha256.Sum256(bin); hex.EncodeToString(sum[:]) != key {
				return nil, cove.Errorf(cove.Invalid, "the algorithm file does not match its SHA-256 digest")
			}
		}
		return d.compileModule(bin)
	})
	return mod, release, err
}

func readAlgorithm(path string) ([]byte, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, cove.Wrap(err, "cannot read the algorithm")
	}
	return bin, nil
}

// compileModule compiles bin and checks it is a WASI command, so that
// every module the cache holds can run.
func (d *Driver) compileModule(bin []byte) (wazero.CompiledModule, error) {
	if !strings.HasPrefix(string(bin), "\x00asm") {
		return nil, &notRunnable{"the algorithm is not a WebAssembly module"}
	}
	if strings.HasPrefix(string(bin), "\x00asm\x0d\x00\x01\x00") {
		return nil, &notRunnable{"the algorithm is a WebAssembly component (WASI preview 2); " +
			"the wasm driver runs WASI preview 1 modules, such as Go's GOOS=wasip1 builds"}
	}
	// The context only carries wazero options, none of which apply here;
	// compilation is not interruptible.
	mod, err := d.runtime.CompileModule(context.Background(), bin)
	if err != nil {
		return nil, &notRunnable{"the algorithm is not a valid WebAssembly module: " + firstLine(err)}
	}
	if bad := checkCommand(mod); bad != nil {
		_ = mod.Close(context.Background())
		return nil, bad
	}
	return mod, nil
}

// checkCommand refuses modules that import anything but WASI, or have no
// _start to run: instantiating them would fail with wazero's wording, or
// succeed and do nothing.
func checkCommand(mod wazero.CompiledModule) *notRunnable {
	for _, f := range mod.ImportedFunctions() {
		if module, name, _ := f.Import(); module != wasi_snapshot_preview1.ModuleName {
			return &notRunnable{fmt.Sprintf("the module imports %q from %q; the sandbox provides only %s",
				name, module, wasi_snapshot_preview1.ModuleName)}
		}
	}
	if len(mod.ImportedMemories()) > 0 {
		return &notRunnable{"the module imports its memory; a WASI command must define its own"}
	}
	if _, ok := mod.ExportedFunctions()["_start"]; !ok {
		return &notRunnable{"the module exports no _start function: it is a library or reactor, not a WASI command"}
	}
	return nil
}

// run instantiates mod for spec and runs its _start.
func (d *Driver) run(ctx context.Context, spec sandbox.Spec, limits sandbox.Limits, mod wazero.CompiledModule) (sandbox.Result, error) {
	for _, m := range mod.ExportedMemories() {
		if initial := int64(m.Min()) * 65536; initial > limits.MemoryBytes {
			return sandbox.Result{ExitCode: -1, Failure: sandbox.FailureOOM, Detail: fmt.Sprintf(
				"the module starts with %s of memory, over its limit of %s", formatBytes(initial), formatBytes(limits.MemoryBytes))}, nil
		}
	}
	if st, err := os.Stat(spec.OutputDir); err != nil || !st.IsDir() {
		return sandbox.Result{}, cove.Wrap(err, "the output directory is missing or not a directory")
	}
	roots := make(map[string]*os.Root, len(spec.Inputs))
	defer func() {
		for _, r := range roots {
			r.Close()
		}
	}()
	for _, in := range spec.Inputs {
		r, err := os.OpenRoot(in.Dir)
		if err != nil {
			return sandbox.Result{}, cove.Wrap(err, fmt.Sprintf("cannot open input %s", in.Name))
		}
		roots[in.Name] = r
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, cancelTimeout := context.WithTimeout(ctx, limits.Duration)
	defer cancelTimeout()
	defer context.AfterFunc(d.stopping, func() { cancel(errDriverClosed) })()

	quota := newQuota(limits.DiskBytes, func() { cancel(errDiskFull) })
	mem := &memory{limit: uint64(limits.MemoryBytes)}
	defer mem.release()
	cfg := moduleConfig(ctx, spec, newInputsFS(roots), newOutputsFS(spec.OutputDir, quota))

	// The module runs on this goroutine; pinning it to its thread makes
	// that thread's CPU clock the run's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := startCPU()
	if budget := cpuBudget(limits); threadCPU && budget > 0 {
		defer watchCPU(ctx, cpu, budget, func() { cancel(errCPUTime) })()
	}

	start := time.Now()
	instantiated, err := d.execute(experimental.WithMemoryAllocator(ctx, mem), mod, cfg, mem)
	res := sandbox.Result{CPUTime: cpu.used(), PeakMemory: int64(mem.peak.Load()), Wall: time.Since(start)}
	res.ExitCode, res.Failure, res.Detail = outcome(ctx, err, instantiated, quota, mem, limits)
	return res, nil
}

// outcome reads how a run ended from the error of execute and from what
// the run's limits recorded.
func outcome(ctx context.Context, err error, instantiated bool, quota *quota, mem *memory, limits sandbox.Limits) (int, sandbox.Failure, string) {
	exitCode := -1
	var exit *sys.ExitError
	stoppedByDriver := false
	switch {
	case err == nil:
		exitCode = 0
	case errors.As(err, &exit):
		code := exit.ExitCode()
		// A module may exit with these codes itself; only a done context
		// says the runtime stopped it.
		if ctx.Err() != nil && (code == sys.ExitCodeContextCanceled || code == sys.ExitCodeDeadlineExceeded) {
			stoppedByDriver = true
		} else {
			exitCode = int(code)
		}
	}

	switch {
	case quota.exceeded.Load():
		// Whether the module died of the refused write or ignored it, its
		// outputs are incomplete.
		return exitCode, sandbox.FailureDiskFull, fmt.Sprintf("the algorithm tried to write more than %s under %s",
			formatBytes(limits.DiskBytes), sandbox.OutputsDir)
	case stoppedByDriver:
		r := stopped(ctx, context.Cause(ctx), limits.Duration)
		return exitCode, r.Failure, r.Detail
	case mem.refused.Load() && exitCode != 0:
		// A module that handled the refusal and exited 0 did not fail.
		return exitCode, sandbox.FailureOOM, fmt.Sprintf("the algorithm needed more memory than its limit of %s",
			formatBytes(limits.MemoryBytes))
	case !instantiated:
		return exitCode, sandbox.FailureInvalid, "the module could not be started: " + firstLine(err)
	case err != nil && exit == nil:
		// A trap: the module stopped itself, by a bug, without exiting.
		return exitCode, sandbox.FailureNone, "the algorithm crashed: " + firstLine(err)
	}
	return exitCode, sandbox.FailureNone, ""
}

// execute instantiates mod and calls its _start. It reports whether
// instantiation succeeded, so a link error is told apart from a crash.
func (d *Driver) execute(ctx context.Context, mod wazero.CompiledModule, cfg wazero.ModuleConfig, mem *memory) (bool, error) {
	m, err := d.runtime.InstantiateModule(ctx, mod, cfg)
	if err != nil {
		return false, err
	}
	defer m.Close(context.WithoutCancel(ctx))
	if mem.refused.Load() {
		// The initial memory is over the limit (checked for exported
		// memories before; this catches a private one): do not start.
		return true, errMemoryAtStart
	}
	_, err = m.ExportedFunction("_start").Call(ctx)
	return true, err
}

// moduleConfig is everything the module sees of the host.
func moduleConfig(ctx context.Context, spec sandbox.Spec, inputs, outputs experimentalsys.FS) wazero.ModuleConfig {
	fsc := wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(inputs, sandbox.InputsDir)
	fsc = fsc.(sysfs.FSConfig).WithSysFSMount(outputs, sandbox.OutputsDir)
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: any number of instances at once
		WithStartFunctions().
		WithArgs(append([]string{filepath.Base(spec.Algorithm)}, spec.Args...)...).
		WithFSConfig(fsc).
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(sleeper(ctx)).
		WithRandSource(rand.Reader)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		cfg = cfg.WithEnv(k, spec.Env[k])
	}
	if spec.Stdout != nil {
		cfg = cfg.WithStdout(spec.Stdout)
	}
	if spec.Stderr != nil {
		cfg = cfg.WithStderr(spec.Stderr)
	}
	return cfg
}

// sleeper sleeps like wazero's WithSysNanosleep but wakes when ctx is done:
// the runtime only checks ctx in the module's own code, so a module asleep
// in poll_oneoff would otherwise outlive its deadline.
func sleeper(ctx context.Context) sys.Nanosleep {
	return func(ns int64) {
		t := time.NewTimer(time.Duration(ns))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// cpuBudget is the CPU time a run may use, or 0 for no cap beyond the
// wall-clock limit. A module runs on one thread, so with CPUs of one or
// more it cannot use more CPU than wall time.
func cpuBudget(l sandbox.Limits) time.Duration {
	if l.CPUs <= 0 || l.CPUs >= 1 {
		return 0
	}
	return time.Duration(float64(l.Duration) * l.CPUs)
}

// watchCPU calls onExceed once cpu passes budget. The returned func stops
// the watch and waits for it.
func watchCPU(ctx context.Context, cpu *cpuMeter, budget time.Duration, onExceed func()) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cpuCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if cpu.used() >= budget {
					onExceed()
					return
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// stopped is the result of a run stopped from outside the module: its
// context ended, for the given cause. limit is the run's Duration, for
// the message.
func stopped(ctx context.Context, cause error, limit time.Duration) sandbox.Result {
	res := sandbox.Result{ExitCode: -1}
	switch {
	case errors.Is(cause, errCPUTime):
		res.Failure = sandbox.FailureTimeout
		res.Detail = "the algorithm used up its CPU time"
	case errors.Is(cause, errDriverClosed):
		res.Failure = sandbox.FailureCanceled
		res.Detail = "the run was stopped because its node is shutting down"
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.Failure = sandbox.FailureTimeout
		res.Detail = "the algorithm did not finish within its time limit"
		if limit > 0 {
			res.Detail += " of " + limit.String()
		}
	default:
		res.Failure = sandbox.FailureCanceled
		res.Detail = "the run was stopped before the algorithm finished"
	}
	return res
}

// validate checks what the driver relies on and the agent should never
// get wrong.
func validate(spec sandbox.Spec) error {
	switch {
	case spec.Kind != "wasm":
		return cove.Errorf(cove.Invalid, "the wasm driver runs algorithms of kind wasm, not %q", spec.Kind)
	case spec.Algorithm == "":
		return cove.Errorf(cove.Invalid, "the algorithm path is empty")
	case spec.OutputDir == "":
		return cove.Errorf(cove.Invalid, "the output directory is empty")
	case spec.AlgorithmSHA256 != "" && !isSHA256(spec.AlgorithmSHA256):
		return cove.Errorf(cove.Invalid, "the algorithm digest is not a hex SHA-256")
	}
	seen := make(map[string]bool, len(spec.Inputs))
	for _, in := range spec.Inputs {
		if !validInputName(in.Name) || seen[in.Name] {
			return cove.Errorf(cove.Invalid, "input name %q is invalid or repeated", in.Name)
		}
		if in.Dir == "" {
			return cove.Errorf(cove.Invalid, "input %s has no directory", in.Name)
		}
		seen[in.Name] = true
	}
	// wazero refuses these at instantiation; checking here makes them the
	// caller's error rather than the algorithm's.
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return cove.Errorf(cove.Invalid, "environment variable %q is invalid", k)
		}
	}
	for _, a := range spec.Args {
		if strings.ContainsRune(a, 0) {
			return cove.Errorf(cove.Invalid, "an argument contains a NUL byte")
		}
	}
	return validateLimits(spec.Limits)
}

func validateLimits(l sandbox.Limits) error {
	if l.CPUs < 0 || l.MemoryBytes < 0 || l.DiskBytes < 0 || l.Duration < 0 || l.Processes < 0 {
		return cove.Errorf(cove.Invalid, "limits must not be negative")
	}
	return nil
}

// validInputName is the contract's [a-z0-9_-]+: one path component that
// cannot be "." or "..".
func validInputName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// firstLine keeps the first line of a wazero error: the rest is a stack
// trace, for the algorithm's author rather than the run's events.
func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// formatBytes formats n for a user: whole MiB when it is, else bytes.
func formatBytes(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
