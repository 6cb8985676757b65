package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/sandbox"
)

// killGrace bounds how long the driver waits for bwrap and the sandbox to be
// gone after it killed them; the kernel needs no more than milliseconds.
const killGrace = 10 * time.Second

// limits are one run's sandbox.Limits with the defaults filled in.
type limits struct {
	duration   time.Duration
	cpuSeconds int64
	memory     int64
	disk       int64
	processes  int
}

func resolveLimits(ctx context.Context, l sandbox.Limits) limits {
	r := limits{duration: l.Duration, memory: l.MemoryBytes, disk: l.DiskBytes, processes: l.Processes}
	if r.duration <= 0 {
		r.duration = DefaultDuration
		if deadline, ok := ctx.Deadline(); ok {
			r.duration = time.Until(deadline)
		}
	}
	if r.memory <= 0 {
		r.memory = DefaultMemoryBytes
	}
	if r.disk <= 0 {
		r.disk = DefaultDiskBytes
	}
	if r.processes <= 0 {
		r.processes = DefaultProcesses
	}
	cpus := l.CPUs
	if cpus <= 0 {
		cpus = DefaultCPUs
	}
	// rlimits cannot cap a CPU share, only CPU time (sandbox.Limits says so).
	r.cpuSeconds = max(1, int64(math.Ceil(cpus*r.duration.Seconds())))
	return r
}

// Run runs spec in a fresh sandbox and returns when the algorithm and every
// process it started are gone and the outputs are in spec.OutputDir. It
// returns an Invalid error for a malformed spec, an Unavailable error when
// the driver cannot run here, and an Internal error when the sandbox could
// not be set up or the outputs not copied.
func (d *Driver) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	t, err := d.probe()
	if err != nil {
		return sandbox.Result{}, err
	}
	if err := d.validate(&spec); err != nil {
		return sandbox.Result{}, err
	}
	algo, err := os.Open(spec.Algorithm)
	if err != nil {
		return sandbox.Result{}, invalidf(err, "the algorithm file cannot be opened")
	}
	defer algo.Close()
	if spec.Kind == "bin" && !executable(algo) {
		return sandbox.Result{ExitCode: -1, Failure: sandbox.FailureInvalid,
			Detail: "The algorithm is neither an ELF executable nor a #! script."}, nil
	}
	lim := resolveLimits(ctx, spec.Limits)
	runCtx, cancel := context.WithTimeout(ctx, lim.duration)
	defer cancel()

	var files fileSet
	defer files.close()
	infoR, infoW, err1 := files.pipe()
	blockR, blockW, err2 := files.pipe()
	outR, outW, err3 := files.pipe()
	errR, errW, err4 := files.pipe()
	passwd, err5 := files.data(passwdFile)
	group, err6 := files.data(groupFile)
	hosts, err7 := files.data(hostsFile)
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil {
		return sandbox.Result{}, cove.Wrap(err, "process driver: cannot create pipes")
	}

	cmd := exec.Command(t.bwrap, d.runArgs(t, &spec, lim, sandbox.AlgorithmDir+"/"+filepath.Base(spec.Algorithm))...)
	cmd.Env = []string{}
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.ExtraFiles = []*os.File{fdInfo - 3: infoW, fdBlock - 3: blockR, fdAlgorithm - 3: algo,
		fdPasswd - 3: passwd, fdGroup - 3: group, fdHosts - 3: hosts}
	cmd.SysProcAttr = d.sysProcAttr()
	if err := closeInheritedOnExec(); err != nil {
		return sandbox.Result{}, cove.Wrap(err, "process driver: cannot protect inherited descriptors")
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return sandbox.Result{}, cove.Wrap(err, "process driver: cannot start bwrap")
	}
	// bwrap has its copies; ours would keep the pipes from ever reaching EOF.
	files.closeNow(infoW, blockR, outW, errW, passwd, group, hosts)

	var copiers sync.WaitGroup
	var stderrTail tail
	copiers.Go(func() { drain(spec.Stdout, outR, nil) })
	copiers.Go(func() { drain(spec.Stderr, errR, &stderrTail) })
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the status is in cmd.ProcessState
		close(exited)
	}()

	box, err := attach(infoR, cmd.Process.Pid, exited)
	if err != nil {
		// bwrap's child waits on --block-fd; closing it would let the
		// algorithm start unsupervised, and the child has no death signal
		// yet. It is the sandbox's pid 1: killing it kills the sandbox.
		killChildren(cmd.Process.Pid)
		_ = cmd.Process.Kill()
		<-exited
		copiers.Wait()
		return sandbox.Result{}, cove.Wrap(fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderrTail.bytes())),
			"process driver: sandbox setup failed")
	}
	defer box.close()
	// Only now may the algorithm run: its outputs are pinned.
	_, _ = blockW.Write([]byte{1})
	files.closeNow(blockW)

	stopped := supervise(ctx, runCtx, box, cmd, exited)
	wall := time.Since(start)
	// bwrap has exited; normally tini went before it, but bwrap may have
	// been killed by someone else, leaving tini to its death signal.
	box.kill()
	if err := box.waitGone(killGrace); err != nil {
		return sandbox.Result{}, cove.Wrap(err, "process driver: the sandbox did not die")
	}
	copiers.Wait()

	res := sandbox.Result{ExitCode: cmd.ProcessState.ExitCode(), Wall: wall}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.CPUTime = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		res.PeakMemory = ru.Maxrss * 1024 // Linux reports KiB
	}
	res.Failure, res.Detail = classify(stopped, res, box.outputsFull(), stderrTail.bytes(), lim)
	if res.Failure == sandbox.FailureTimeout || res.Failure == sandbox.FailureCanceled ||
		res.ExitCode == 128+int(syscall.SIGXFSZ) && res.Failure == sandbox.FailureDiskFull {
		res.ExitCode = -1
	}
	if err := copyOutputs(box.outputs, spec.OutputDir, spec.Stderr); err != nil {
		return res, cove.Wrap(err, "process driver: cannot copy the outputs")
	}
	return res, nil
}

// supervise waits for bwrap to exit, or for runCtx to end and then stops the
// sandbox. It returns why it stopped the sandbox, if it did.
func supervise(ctx, runCtx context.Context, box *box, cmd *exec.Cmd, exited <-chan struct{}) sandbox.Failure {
	select {
	case <-exited:
		return sandbox.FailureNone
	case <-runCtx.Done():
	}
	stopped := sandbox.FailureTimeout
	if errors.Is(ctx.Err(), context.Canceled) {
		stopped = sandbox.FailureCanceled
	}
	// Killing the algorithm makes tini exit, which kills the rest of the pid
	// namespace; bwrap then exits with the usage of the whole tree. Should
	// that not happen at once, tini goes, then bwrap.
	if !box.killAlgorithm() {
		box.kill()
	}
	if !within(exited, time.Second) {
		box.kill()
		if !within(exited, killGrace) {
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	return stopped
}

// within reports whether done is closed within d.
func within(done <-chan struct{}, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

// classify says why the algorithm stopped early, if it did. The kernel does
// not report which rlimit denied what, so the evidence is indirect: the
// signal an exceeded limit sends (bwrap and tini report a signal as 128+n),
// a full outputs tmpfs, or the out-of-memory message every common runtime
// prints when an allocation fails under RLIMIT_AS.
func classify(stopped sandbox.Failure, res sandbox.Result, outputsFull bool, stderrTail []byte, lim limits) (sandbox.Failure, string) {
	switch stopped {
	case sandbox.FailureTimeout:
		return stopped, fmt.Sprintf("The run passed its time limit of %s.", lim.duration.Round(time.Millisecond))
	case sandbox.FailureCanceled:
		return stopped, "The run was stopped."
	}
	if res.ExitCode == 0 {
		return sandbox.FailureNone, ""
	}
	cpuLimit := time.Duration(lim.cpuSeconds) * time.Second
	killed := res.ExitCode == 128+int(syscall.SIGKILL)
	switch {
	case res.ExitCode == 128+int(syscall.SIGXCPU) || killed && res.CPUTime >= cpuLimit:
		return sandbox.FailureTimeout, fmt.Sprintf("The algorithm used its CPU time limit of %s.", cpuLimit)
	case res.ExitCode == 128+int(syscall.SIGXFSZ) || outputsFull:
		return sandbox.FailureDiskFull, fmt.Sprintf("The algorithm wrote more than its limit of %d bytes to %s.", lim.disk, sandbox.OutputsDir)
	case saysOutOfMemory(stderrTail) || res.ExitCode > 128 && res.PeakMemory >= lim.memory/10*9:
		return sandbox.FailureOOM, fmt.Sprintf("The algorithm ran out of its memory limit of %d bytes.", lim.memory)
	}
	return sandbox.FailureNone, ""
}

// oomMessages are what Python, C, C++, Go, Rust and Java print when an
// allocation fails. An algorithm could print one to fake an OOM; it would
// only mislabel its own failure.
var oomMessages = [][]byte{
	[]byte("memoryerror"), []byte("out of memory"), []byte("cannot allocate memory"),
	[]byte("bad_alloc"), []byte("memory allocation of"), []byte("outofmemoryerror"),
}

func saysOutOfMemory(stderr []byte) bool {
	lower := bytes.ToLower(stderr)
	for _, m := range oomMessages {
		if bytes.Contains(lower, m) {
			return true
		}
	}
	return false
}

// validate rejects what the driver must not or cannot run. Names become path
// components inside the sandbox, so they are checked here, not trusted.
func (d *Driver) validate(spec *sandbox.Spec) error {
	if spec.Kind != "bin" && spec.Kind != "python" {
		return invalidf(nil, "kind %q is not run by this driver", spec.Kind)
	}
	fi, err := os.Stat(spec.Algorithm)
	if err != nil || !fi.Mode().IsRegular() {
		return invalidf(err, "the algorithm is not a regular file")
	}
	if fi, err := os.Stat(spec.OutputDir); err != nil || !fi.IsDir() {
		return invalidf(err, "the output directory does not exist")
	}
	l := spec.Limits
	if l.CPUs < 0 || l.MemoryBytes < 0 || l.DiskBytes < 0 || l.Duration < 0 || l.Processes < 0 {
		return invalidf(nil, "limits must not be negative")
	}
	seen := map[string]bool{}
	for _, in := range spec.Inputs {
		if !validName(in.Name) || seen[in.Name] {
			return invalidf(nil, "input name %q is not a unique [a-z0-9_-] name", in.Name)
		}
		seen[in.Name] = true
		if fi, err := os.Stat(in.Dir); err != nil || !fi.IsDir() {
			return invalidf(err, "input %s is not a directory", in.Name)
		}
		if err := d.reachable(in.Dir); err != nil {
			return invalidf(err, "input %s is not readable by the sandbox user %d:%d; it and every directory above it must be searchable",
				in.Name, d.cfg.UID, d.cfg.GID)
		}
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return invalidf(nil, "environment variable %q is malformed", k)
		}
	}
	for _, a := range spec.Args {
		if strings.ContainsRune(a, 0) {
			return invalidf(nil, "arguments must not contain NUL")
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// reachable reports whether bwrap, running as Config.UID/GID because the
// node is root, can bind dir: bwrap resolves bind sources with the
// permissions of that user, so every directory on the way must be
// searchable and dir itself readable. Checking first turns bwrap's terse
// setup failure into a message that names the input.
func (d *Driver) reachable(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	p, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	want := fs.FileMode(5) // r-x on dir itself, --x above it
	for {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !permits(fi, d.cfg.UID, d.cfg.GID, want) {
			return fmt.Errorf("%s: mode %s owner %v", p, fi.Mode(), fi.Sys())
		}
		if p == "/" {
			return nil
		}
		p, want = filepath.Dir(p), 1
	}
}

func permits(fi fs.FileInfo, uid, gid uint32, want fs.FileMode) bool {
	perm := fi.Mode().Perm()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		switch {
		case st.Uid == uid:
			perm >>= 6
		case st.Gid == gid:
			perm >>= 3
		}
	}
	return perm&want == want
}

// executable reports whether f starts like something execve runs: an ELF
// image or a #! script. f's offset is left at the start.
func executable(f *os.File) bool {
	var magic [4]byte
	n, _ := io.ReadFull(f, magic[:])
	_, err := f.Seek(0, io.SeekStart)
	return err == nil && (n == 4 && string(magic[:]) == "\x7fELF" || n >= 2 && string(magic[:2]) == "#!")
}

// drain copies an output stream of the sandbox to dst as it comes, byte for
// byte, and keeps reading after dst fails: a stalled pipe would stall the
// algorithm.
func drain(dst io.Writer, src *os.File, t *tail) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if t != nil {
				t.write(buf[:n])
			}
			if dst != nil {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					dst = nil
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// tail keeps the last bytes of a stream, for bwrap's error messages and the
// out-of-memory heuristics. It is written by one goroutine and read after
// that goroutine is done.
type tail struct{ buf []byte }

const tailSize = 8 << 10

func (t *tail) write(p []byte) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
}

func (t *tail) bytes() []byte {
	if len(t.buf) > tailSize {
		return t.buf[len(t.buf)-tailSize:]
	}
	return t.buf
}

// closeInheritedOnExec marks close-on-exec every descriptor of this process
// that lacks the flag. bwrap, tini and prlimit pass whatever they inherit on
// to the algorithm, and os/exec passes every descriptor without the flag.
// Go opens its own descriptors close-on-exec, so the ones without it came
// from the node's parent (a shell, a supervisor): they must not reach an
// algorithm. The node keeps them open; only its children lose them.
func closeInheritedOnExec() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // closed since the listing, or already marked
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil {
			return err
		}
	}
	return nil
}

// fileSet closes every descriptor a run opened, whatever path it returns by.
type fileSet struct{ files []*os.File }

func (s *fileSet) pipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err == nil {
		s.files = append(s.files, r, w)
	}
	return r, w, err
}

// data returns the read end of a pipe that holds content and then EOF; the
// /etc files are far below a pipe's capacity.
func (s *fileSet) data(content string) (*os.File, error) {
	r, w, err := s.pipe()
	if err != nil {
		return nil, err
	}
	_, err = io.WriteString(w, content)
	s.closeNow(w)
	return r, err
}

func (s *fileSet) closeNow(files ...*os.File) {
	for _, f := range files {
		_ = f.Close() // a second Close of the deferred close is harmless
	}
}

func (s *fileSet) close() { s.closeNow(s.files...) }
