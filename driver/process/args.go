package process

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/covecompute/cove/sandbox"
)

// The algorithm's identity inside the sandbox. It is mapped to one host uid
// only, the one bwrap runs as; every other uid, root included, is unmapped.
const (
	sandboxUID = 1000
	sandboxGID = 1000
)

// Descriptors bwrap inherits, in exec.Cmd.ExtraFiles order.
const (
	fdInfo      = 3 + iota // bwrap writes {"child-pid": N} here
	fdBlock                // bwrap waits here until the driver has pinned the outputs
	fdAlgorithm            // copied into the sandbox, so its host mode and directory do not matter
	fdPasswd
	fdGroup
	fdHosts
)

// etcFiles are the pieces of the host's /etc the sandbox sees: what the
// dynamic linker, time zones, /usr/bin symlinks and Debian's Python need.
// No users, no secrets, no host names.
var etcFiles = []string{
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
	"/etc/localtime", "/etc/alternatives",
}

// netEtcFiles are added only when the run may use the network.
var netEtcFiles = []string{
	"/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/gai.conf",
	"/etc/ssl", "/etc/ca-certificates",
}

// baseArgs are the isolation every sandbox shares, the Available probe
// included: namespaces, the system directories read-only, fresh /proc and
// /dev, and bounded /tmp and /dev/shm.
func (d *Driver) baseArgs(network bool) []string {
	args := []string{
		"--unshare-all", "--unshare-user", "--disable-userns",
		"--die-with-parent", "--new-session", "--as-pid-1",
		"--uid", strconv.Itoa(sandboxUID), "--gid", strconv.Itoa(sandboxGID),
		"--hostname", "cove",
	}
	if network {
		args = append(args, "--share-net")
	}
	args = append(args, "--ro-bind", "/usr", "/usr")
	// On merged-/usr systems these are symlinks into /usr, elsewhere real
	// directories; the sandbox mirrors whichever the host has.
	for _, dir := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		fi, err := os.Lstat(dir)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink(dir); err == nil {
				args = append(args, "--symlink", target, dir)
			}
		case fi.IsDir():
			args = append(args, "--ro-bind", dir, dir)
		}
	}
	etc := etcFiles
	if pythonEtc, err := filepath.Glob("/etc/python3*"); err == nil {
		etc = append(slices.Clone(etc), pythonEtc...)
	}
	if network {
		etc = append(slices.Clone(etc), netEtcFiles...)
	}
	for _, f := range etc {
		args = append(args, "--ro-bind-try", f, f)
	}
	tmp := strconv.FormatInt(d.cfg.TmpBytes, 10)
	return append(args,
		"--proc", "/proc",
		"--dev", "/dev",
		"--size", tmp, "--tmpfs", "/dev/shm",
		// bwrap's /dev is a tmpfs without a size; writable, it would be
		// unbounded memory.
		"--remount-ro", "/dev",
		"--size", tmp, "--tmpfs", "/tmp",
	)
}

// runArgs is the whole bwrap command line of one run. The root tmpfs is
// remounted read-only last, for the same reason as /dev.
func (d *Driver) runArgs(t tools, spec *sandbox.Spec, lim limits, algorithm string) []string {
	args := d.baseArgs(spec.Network)
	args = append(args,
		"--ro-bind-data", strconv.Itoa(fdPasswd), "/etc/passwd",
		"--ro-bind-data", strconv.Itoa(fdGroup), "/etc/group",
		"--ro-bind-data", strconv.Itoa(fdHosts), "/etc/hosts",
	)
	for _, in := range spec.Inputs {
		args = append(args, "--ro-bind", in.Dir, sandbox.InputsDir+"/"+in.Name)
	}
	args = append(args,
		"--perms", "0555", "--ro-bind-data", strconv.Itoa(fdAlgorithm), algorithm,
		"--size", strconv.FormatInt(lim.disk, 10), "--tmpfs", sandbox.OutputsDir,
		"--remount-ro", "/",
		"--chdir", sandbox.OutputsDir,
		"--clearenv",
	)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		args = append(args, "--setenv", k, spec.Env[k])
	}
	args = append(args,
		"--info-fd", strconv.Itoa(fdInfo),
		"--block-fd", strconv.Itoa(fdBlock),
		"--", t.tini, "--", t.prlimit,
		"--cpu="+strconv.FormatInt(lim.cpuSeconds, 10)+":"+strconv.FormatInt(lim.cpuSeconds+1, 10),
		"--as="+strconv.FormatInt(lim.memory, 10),
		"--fsize="+strconv.FormatInt(lim.disk, 10),
		// tini is one of the run's tasks.
		"--nproc="+strconv.Itoa(lim.processes+1),
		"--core=0",
		"--",
	)
	if spec.Kind == "python" {
		args = append(args, d.cfg.Python, "-I", "-B", algorithm)
	} else {
		args = append(args, algorithm)
	}
	return append(args, spec.Args...)
}

// Synthetic /etc files: the algorithm's user has a name and a home, and the
// host's accounts and names stay hidden. The ids match sandboxUID/GID.
const (
	passwdFile = "cove:x:1000:1000:Cove algorithm:/tmp:/bin/sh\n"
	groupFile  = "cove:x:1000:\n"
	hostsFile  = "127.0.0.1\tlocalhost cove\n::1\tlocalhost cove\n"
)
