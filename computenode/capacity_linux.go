package computenode

import (
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/covecompute/cove/runproto"
)

// hostResources returns what the host has: every CPU, the total memory,
// and the disk space free for unprivileged users under dir.
func hostResources(dir string) runproto.Resources {
	r := runproto.Resources{CPUs: float64(runtime.NumCPU())}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		r.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		r.DiskBytes = int64(st.Bavail) * st.Bsize
	}
	return r
}
