// Package process runs "bin" and "python" algorithms as ordinary Linux
// processes isolated by bubblewrap (bwrap): new user, pid, mount, ipc, uts,
// cgroup and network namespaces, a fresh read-only root that holds only /usr
// (and the /bin, /lib, ... links into it), a few harmless pieces of /etc, the
// inputs read-only, the algorithm read-only and a size-bounded /cove/outputs.
//
// # Why the pieces are arranged as they are
//
// Limits are rlimits, set by util-linux prlimit(1) inside the sandbox, right
// before it execs the algorithm. Go's SysProcAttr has no rlimit field;
// calling prlimit(2) on the child after Start races with the child; setting
// them on bwrap itself would also bind bwrap and, worse, freeze
// RLIMIT_NPROC into the new user namespace's parent-level count, which
// includes every other process of the same host user. Setting them in the
// sandbox, after the user namespace exists, makes RLIMIT_NPROC count only the
// run's own tasks: the kernel charges processes per (user namespace, uid).
//
// The kernel never applies RLIMIT_NPROC to host uid 0, and a sandbox whose
// uid maps to host root may write /proc/sys (kernel.core_pattern included).
// So when the node runs as root, bwrap is started as an unprivileged host
// user (Config.UID/GID) and runs in its unprivileged mode; a sandbox escape
// then lands as that user.
//
// tini is pid 1 of the sandbox (bwrap --as-pid-1). bwrap's own pid 1 is not
// waited for by the bwrap process we start, so the CPU time and peak memory
// of the algorithm would never reach our wait4; with tini, every process of
// the sandbox is reaped by tini, tini by bwrap, bwrap by us, and
// ProcessState.SysUsage covers the whole tree. When the algorithm exits,
// tini exits and the kernel kills whatever is left in the pid namespace.
//
// /cove/outputs is a tmpfs of Limits.DiskBytes inside the sandbox, so the
// total written is truly bounded (ENOSPC), not merely polled. Before the
// algorithm starts (bwrap --block-fd), the driver opens that tmpfs through
// /proc/<pid>/root; the open descriptor keeps it readable after the sandbox
// is gone, and the driver copies the regular files and directories into
// Spec.OutputDir. Symlinks, fifos and sockets are dropped, so nothing the
// algorithm plants can point the agent at a host file. The price: outputs
// live in memory (or swap) until the run ends, and are copied once.
package process
