package process

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/covecompute/cove/sandbox"
)

// setupTimeout bounds bwrap's setup, which copies the algorithm into the
// sandbox and so grows with its size.
const setupTimeout = 30 * time.Second

// box is a running sandbox as the driver holds it: a pidfd of its pid 1,
// which cannot name another process if the pid is reused, and the outputs
// tmpfs, which stays readable through the descriptor after the sandbox dies.
type box struct {
	pid     int // in the host's pid namespace
	pidfd   int
	outputs *os.Root
	statfs  *os.File // the same tmpfs, for Fstatfs
}

var errNotReady = errors.New("sandbox not set up yet")

// attach learns the sandbox's pid 1 from bwrap's info descriptor and waits
// until bwrap has finished mounting: bwrap then blocks on --block-fd, with
// its new root in place. Until the second pivot_root the process's root is
// the host's (or bwrap's scratch tmpfs, which has no /cove), so "the root is
// not ours and holds cove/outputs" means the setup is complete.
func attach(info *os.File, bwrapPid int, exited <-chan struct{}) (*box, error) {
	raw, err := io.ReadAll(io.LimitReader(info, 4096)) // EOF once bwrap has written it or died
	if err != nil {
		return nil, err
	}
	var msg struct {
		ChildPid int `json:"child-pid"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil || msg.ChildPid <= 0 {
		return nil, errSetup
	}
	pidfd, err := unix.PidfdOpen(msg.ChildPid, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: pidfd_open: %v", errSetup, err)
	}
	// The pid could have been reused between bwrap's report and pidfd_open
	// only if the child died; then its parent is not bwrap.
	if ppid, err := parentPid(msg.ChildPid); err != nil || ppid != bwrapPid {
		_ = unix.Close(pidfd)
		return nil, errSetup
	}
	hostRoot, err := os.Stat("/")
	if err != nil {
		_ = unix.Close(pidfd)
		return nil, err
	}
	deadline := time.Now().Add(setupTimeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		b, err := openOutputs(msg.ChildPid, hostRoot)
		if err == nil {
			b.pid, b.pidfd = msg.ChildPid, pidfd
			return b, nil
		}
		if !errors.Is(err, errNotReady) || time.Now().After(deadline) {
			_ = unix.Close(pidfd)
			return nil, err
		}
		select {
		case <-exited:
			_ = unix.Close(pidfd)
			return nil, errSetup
		case <-time.After(delay):
		}
	}
}

func openOutputs(pid int, hostRoot fs.FileInfo) (*box, error) {
	root, err := os.OpenRoot("/proc/" + strconv.Itoa(pid) + "/root")
	if err != nil {
		return nil, errNotReady // gone or not yet visible; the caller watches bwrap
	}
	defer root.Close()
	if fi, err := root.Stat("."); err != nil || os.SameFile(fi, hostRoot) {
		return nil, errNotReady
	}
	rel := strings.TrimPrefix(sandbox.OutputsDir, "/")
	outputs, err := root.OpenRoot(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotReady
	} else if err != nil {
		return nil, err
	}
	f, err := outputs.Open(".")
	if err != nil {
		_ = outputs.Close()
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		_ = outputs.Close()
		_ = f.Close()
		return nil, fmt.Errorf("%s in the sandbox is not its tmpfs", sandbox.OutputsDir)
	}
	return &box{outputs: outputs, statfs: f}, nil
}

func parentPid(pid int) (int, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses; it ends at the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.Atoi(fields[1]) // state, then ppid
}

// kill kills the sandbox's pid 1 and with it, by the kernel's rule for pid
// namespaces, every process in the sandbox.
func (b *box) kill() {
	_ = unix.PidfdSendSignal(b.pidfd, unix.SIGKILL, nil, 0) // ESRCH: gone already
}

// killAlgorithm kills the algorithm's main process, tini's child. tini reaps
// it and exits, so its CPU time and memory reach bwrap's rusage; killing
// tini instead would make the kernel reap the whole sandbox unaccounted.
// It reports whether it found the process.
func (b *box) killAlgorithm() bool { return killChildren(b.pid) }

// killChildren kills the children of ppid, which must be alive (else its
// pid, and so the children's parent pid, could be reused). It reports
// whether it killed any.
func killChildren(ppid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	killed := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parent, err := parentPid(pid); err != nil || parent != ppid {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		// The pidfd names one process for good; if pid was reused before
		// it was opened, the new process's parent is not ppid.
		if parent, err := parentPid(pid); err == nil && parent == ppid {
			killed = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil || killed
		}
		_ = unix.Close(fd)
	}
	return killed
}

// waitGone returns once pid 1 has exited, which the kernel reports only after
// it has killed and reaped the rest of the pid namespace.
func (b *box) waitGone(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("the sandbox's pid 1 outlived its kill")
		}
		fds := []unix.PollFd{{Fd: int32(b.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == nil && n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// outputsFull reports whether the outputs tmpfs has no free block left, the
// mark of an algorithm that hit Limits.DiskBytes.
func (b *box) outputsFull() bool {
	var st unix.Statfs_t
	return unix.Fstatfs(int(b.statfs.Fd()), &st) == nil && st.Bfree == 0
}

func (b *box) close() {
	_ = unix.Close(b.pidfd)
	_ = b.outputs.Close()
	_ = b.statfs.Close()
}

// copyOutputs copies the regular files and directories of the dead
// sandbox's outputs into dst. Everything else is dropped and said so on
// notes: a symlink could name a host file the agent would then seal and
// ship. Modes keep only the owner's execute bit's meaning: 0644 or 0755.
func copyOutputs(src *os.Root, dst string, notes io.Writer) error {
	out, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	return fs.WalkDir(src.FS(), ".", func(name string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case name == ".":
			return nil
		case e.IsDir():
			return out.Mkdir(name, 0o755)
		case e.Type().IsRegular():
			return copyFile(src, out, name)
		default:
			if notes != nil {
				fmt.Fprintf(notes, "cove: %s/%s is not a regular file or directory; it is not kept\n", sandbox.OutputsDir, name)
			}
			return nil
		}
	})
}

func copyFile(src, dst *os.Root, name string) error {
	in, err := src.Open(name)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	mode := fs.FileMode(0o644)
	if fi.Mode()&0o100 != 0 {
		mode = 0o755
	}
	out, err := dst.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
