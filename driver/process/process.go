package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/sandbox"
)

// Defaults for the zero values of sandbox.Limits. They are conservative:
// a dataset owner who wants more says so in the computation.
const (
	DefaultCPUs        = 1.0       // cores, for the CPU time limit
	DefaultDuration    = time.Hour // wall clock, when the context has no deadline
	DefaultMemoryBytes = 1 << 30   // RLIMIT_AS of each process
	DefaultDiskBytes   = 1 << 30   // size of the /cove/outputs tmpfs, in memory
	DefaultProcesses   = 128       // tasks (processes and threads)
	DefaultTmpBytes    = 64 << 20  // size of /tmp and of /dev/shm, in memory
)

// nobody is the host identity of the sandbox when the node runs as root and
// Config leaves UID or GID zero.
const nobody = 65534

// Config says where the driver's host tools are and how big the sandbox's
// scratch space is. The zero value is usable.
type Config struct {
	// Bwrap is the path of bubblewrap; empty means "bwrap" looked up in PATH.
	Bwrap string
	// Python is the interpreter path inside the sandbox; empty means
	// /usr/bin/python3. Only /usr, /bin, /sbin and /lib* of the host are
	// visible in the sandbox, so it must live there.
	Python string
	// UID and GID are the host identity bwrap runs as when the node runs as
	// root: the kernel exempts uid 0 from RLIMIT_NPROC, and a sandbox mapped
	// to host root could write /proc/sys. Zero means 65534 (nobody); a
	// dedicated unused uid is better on a shared host. Input directories and
	// the directories above them must be searchable by this identity. Unused
	// when the node is not root: the sandbox then runs as the node's user.
	UID, GID uint32
	// TmpBytes is the size of each of the sandbox's /tmp and /dev/shm
	// tmpfs; zero means DefaultTmpBytes. It is memory, not disk.
	TmpBytes int64
}

// Driver runs algorithms under bubblewrap. It is safe for concurrent Runs.
type Driver struct {
	cfg   Config
	probe func() (tools, error)
}

var _ sandbox.Driver = (*Driver)(nil)

// tools are the host paths the probe found; they do not change afterwards.
type tools struct {
	bwrap, tini, prlimit string
}

// New returns a driver. It does not touch the host; Available does.
func New(cfg Config) *Driver {
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.TmpBytes <= 0 {
		cfg.TmpBytes = DefaultTmpBytes
	}
	if cfg.UID == 0 {
		cfg.UID = nobody
	}
	if cfg.GID == 0 {
		cfg.GID = nobody
	}
	d := &Driver{cfg: cfg}
	// The probe starts a sandbox, so it runs once per driver; the host does
	// not gain or lose bubblewrap while a node runs.
	d.probe = sync.OnceValues(d.findTools)
	return d
}

// Name returns "process".
func (d *Driver) Name() string { return "process" }

// Kinds returns the algorithm kinds the driver runs: "bin" and "python".
func (d *Driver) Kinds() []string { return []string{"bin", "python"} }

// Available returns nil when bwrap, tini, prlimit and Python are installed
// and bwrap can create its namespaces here, checked once by starting a
// trivial sandbox. Otherwise it returns an Unavailable error naming what is
// missing: the driver never runs an algorithm without isolation.
func (d *Driver) Available() error {
	_, err := d.probe()
	return err
}

func (d *Driver) findTools() (tools, error) {
	var t tools
	bwrap := d.cfg.Bwrap
	if bwrap == "" {
		bwrap = "bwrap"
	}
	p, err := exec.LookPath(bwrap)
	if err != nil {
		return t, unavailable(err, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
	}
	t.bwrap = p
	// tini and prlimit run inside the sandbox, where only the system
	// directories are visible, so they must be found there.
	if t.tini, err = systemTool("tini"); err != nil {
		return t, unavailable(err, "tini is not installed: apt-get install tini")
	}
	if t.prlimit, err = systemTool("prlimit"); err != nil {
		return t, unavailable(err, "prlimit is not installed: apt-get install util-linux")
	}
	if !visibleInSandbox(d.cfg.Python) {
		return t, unavailable(nil, fmt.Sprintf("python interpreter %s is outside /usr, /bin and /sbin, which the sandbox cannot see", d.cfg.Python))
	}
	if _, err := os.Stat(d.cfg.Python); err != nil {
		return t, unavailable(err, fmt.Sprintf("python3 is not installed at %s: apt-get install python3", d.cfg.Python))
	}

	// A sandbox as strict as a real run, running the interpreter: if user
	// namespaces are disabled or bwrap is too old, this is where it shows.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := d.baseArgs(false)
	args = append(args, "--remount-ro", "/", "--clearenv", "--", t.tini, "--", t.prlimit, "--nproc=16", "--",
		d.cfg.Python, "-I", "-B", "-c", "")
	if err := closeInheritedOnExec(); err != nil {
		return t, unavailable(err, "cannot protect inherited descriptors")
	}
	cmd := exec.CommandContext(ctx, t.bwrap, args...)
	cmd.Env = []string{}
	cmd.SysProcAttr = d.sysProcAttr()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		return t, unavailable(fmt.Errorf("%w: %s", err, msg),
			"bubblewrap cannot create a sandbox on this host (unprivileged user namespaces disabled?): "+firstLine(msg))
	}
	return t, nil
}

// systemTool finds name in PATH and insists that it lives in a directory the
// sandbox binds.
func systemTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", err
	}
	if !visibleInSandbox(p) {
		return "", fmt.Errorf("%s is at %s, outside the directories the sandbox binds", name, p)
	}
	return p, nil
}

func visibleInSandbox(path string) bool {
	for _, dir := range []string{"/usr/", "/bin/", "/sbin/"} {
		if strings.HasPrefix(path, dir) {
			return true
		}
	}
	return false
}

// sysProcAttr starts bwrap in its own process group, so a terminal's ^C to
// the node does not reach it, and, when the node is root, as the
// unprivileged sandbox identity. bwrap's --die-with-parent ties it to the
// node.
func (d *Driver) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		attr.Credential = &syscall.Credential{Uid: d.cfg.UID, Gid: d.cfg.GID, Groups: []uint32{}}
	}
	return attr
}

func unavailable(err error, msg string) *cove.Error {
	return &cove.Error{Code: cove.Unavailable, Message: "process driver: " + msg, Err: err}
}

// invalidf is an Invalid error whose message is safe to show and whose
// cause, naming host paths, is not.
func invalidf(cause error, format string, args ...any) *cove.Error {
	e := cove.Errorf(cove.Invalid, "process driver: "+format, args...)
	e.Err = cause
	return e
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// errSetup means bwrap stopped before the sandbox was ready; its stderr says
// why.
var errSetup = errors.New("bwrap exited before the sandbox was ready")
