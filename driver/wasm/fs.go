package wasm

import (
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
)

// The guest sees exactly two directories, each a WASI pre-open: the inputs
// at sandbox.InputsDir and the outputs at sandbox.OutputsDir. Nothing is
// mounted at "/", so any other absolute path, and any ".." that climbs out
// of a pre-open (wazero rejects those lexically), finds nothing.
//
// Symbolic links are the other way out, since the host kernel resolves
// them: the inputs are opened through os.Root, which refuses links that
// leave the dataset's directory, and the outputs refuse to create links at
// all, so the guest cannot plant one there.

// inputsFS is the union of the run's datasets as an io/fs.FS: its root
// lists one directory per input, and "name/rest" is "rest" in input name.
// One pre-open for all inputs, rather than one per input, lets algorithms
// list /cove/inputs to discover their datasets.
type inputsFS struct {
	names  []string // sorted
	inputs map[string]fs.FS
}

var _ fs.FS = (*inputsFS)(nil)

// newInputsFS returns the guest's view of roots: read-only, with every
// write refused as EROFS. The roots stay owned by the caller, who closes
// them when the run ends.
func newInputsFS(roots map[string]*os.Root) experimentalsys.FS {
	u := &inputsFS{inputs: make(map[string]fs.FS, len(roots))}
	for name, root := range roots {
		u.names = append(u.names, name)
		u.inputs[name] = root.FS()
	}
	slices.Sort(u.names)
	// AdaptFS opens files read-only whatever the flags; ReadFS refuses the
	// operations that would change something.
	return readOnlyFS{&sysfs.ReadFS{FS: &sysfs.AdaptFS{FS: u}}}
}

// Open implements fs.FS.
func (u *inputsFS) Open(name string) (fs.File, error) {
	if name == "" {
		name = "."
	}
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return &inputsRoot{u: u}, nil
	}
	first, rest, _ := strings.Cut(name, "/")
	input, ok := u.inputs[first]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	if rest == "" {
		rest = "."
	}
	return input.Open(rest)
}

// inputsRoot is an open handle on the root of inputsFS. wazero rewinds a
// directory by opening it again, so it reads forward only.
type inputsRoot struct {
	u   *inputsFS
	pos int // entries ReadDir has returned
}

var _ fs.ReadDirFile = (*inputsRoot)(nil)

func (*inputsRoot) Stat() (fs.FileInfo, error) { return rootInfo{}, nil }
func (*inputsRoot) Close() error               { return nil }

func (*inputsRoot) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: ".", Err: syscall.EISDIR}
}

// ReadDir lists the inputs with the stat of their own directories.
func (r *inputsRoot) ReadDir(n int) ([]fs.DirEntry, error) {
	names := r.u.names[r.pos:]
	if n > 0 {
		if len(names) == 0 {
			return nil, io.EOF
		}
		names = names[:min(n, len(names))]
	}
	r.pos += len(names)
	entries := make([]fs.DirEntry, 0, len(names))
	for _, name := range names {
		info, err := fs.Stat(r.u.inputs[name], ".")
		if err != nil {
			return entries, err
		}
		entries = append(entries, fs.FileInfoToDirEntry(renamed{info, name}))
	}
	return entries, nil
}

// rootInfo describes the root of inputsFS, which exists on no disk.
type rootInfo struct{}

func (rootInfo) Name() string       { return "." }
func (rootInfo) Size() int64        { return 0 }
func (rootInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (rootInfo) ModTime() time.Time { return time.Time{} }
func (rootInfo) IsDir() bool        { return true }
func (rootInfo) Sys() any           { return nil }

// renamed is an input's directory under its input name, as its stat names
// it after the host directory.
type renamed struct {
	fs.FileInfo
	name string
}

func (r renamed) Name() string { return r.name }

// readOnlyFS refuses opening for write with EROFS, which guests report as
// "read-only file system"; ReadFS alone says ENOSYS.
type readOnlyFS struct{ experimentalsys.FS }

// writeFlags are the open flags that would change a file.
const writeFlags = experimentalsys.O_WRONLY | experimentalsys.O_RDWR | experimentalsys.O_APPEND |
	experimentalsys.O_CREAT | experimentalsys.O_TRUNC

func (r readOnlyFS) OpenFile(path string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	if flag&writeFlags != 0 {
		return nil, experimentalsys.EROFS
	}
	return r.FS.OpenFile(path, flag, perm)
}

// outputsFS is the run's output directory with a quota on the bytes
// written and no links.
//
// The quota counts every byte the guest writes (write, pwrite) and every
// byte by which it extends a file (truncate), cumulatively: rewriting a
// file or deleting one gives nothing back. So the bytes on the host disk
// never exceed the limit, whatever the guest does, and "total bytes
// written", the contract's own definition of DiskBytes, is exactly what is
// counted. A write that would pass the limit is refused whole, and the
// quota's exceeded callback stops the run: its outputs are incomplete.
type outputsFS struct {
	experimentalsys.FS
	q *quota
}

// newOutputsFS serves dir, counting writes against q.
func newOutputsFS(dir string, q *quota) *outputsFS {
	return &outputsFS{FS: sysfs.DirFS(dir), q: q}
}

func (o *outputsFS) OpenFile(path string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	f, errno := o.FS.OpenFile(path, flag, perm)
	if errno != 0 {
		return nil, errno
	}
	return &quotaFile{File: f, q: o.q}, 0
}

// Symlink is refused: the host would follow a link to "../../etc" (wazero's
// DirFS does not confine link targets), and results are plain files.
func (*outputsFS) Symlink(string, string) experimentalsys.Errno { return experimentalsys.EPERM }

// Link is refused: a hard link to a file would let one quota-counted write
// appear under two names, and results need none.
func (*outputsFS) Link(string, string) experimentalsys.Errno { return experimentalsys.EPERM }

// quota is the byte budget of one run's outputs.
type quota struct {
	left     atomic.Int64
	exceeded atomic.Bool
	onExceed func() // called once, when a write is first refused
}

func newQuota(limit int64, onExceed func()) *quota {
	q := &quota{onExceed: onExceed}
	q.left.Store(limit)
	return q
}

// take reserves n bytes, or reports the quota exceeded and returns false.
func (q *quota) take(n int64) bool {
	if n <= 0 {
		return true
	}
	if q.left.Add(-n) >= 0 {
		return true
	}
	q.left.Add(n)
	if q.exceeded.CompareAndSwap(false, true) {
		q.onExceed()
	}
	return false
}

// give returns bytes reserved for a write that wrote fewer.
func (q *quota) give(n int64) {
	if n > 0 {
		q.left.Add(n)
	}
}

// quotaFile counts the bytes written through it. EIO is the closest error
// wazero can pass to a wasip1 guest: its errno set has no ENOSPC.
type quotaFile struct {
	experimentalsys.File
	q *quota
}

func (f *quotaFile) Write(buf []byte) (int, experimentalsys.Errno) {
	if !f.q.take(int64(len(buf))) {
		return 0, experimentalsys.EIO
	}
	n, errno := f.File.Write(buf)
	f.q.give(int64(len(buf) - n))
	return n, errno
}

func (f *quotaFile) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	if !f.q.take(int64(len(buf))) {
		return 0, experimentalsys.EIO
	}
	n, errno := f.File.Pwrite(buf, off)
	f.q.give(int64(len(buf) - n))
	return n, errno
}

// Truncate charges growth only: extending a file makes its new bytes
// readable (as zeros) to whoever collects the outputs, even if the host
// stores them sparsely.
func (f *quotaFile) Truncate(size int64) experimentalsys.Errno {
	st, errno := f.File.Stat()
	if errno != 0 {
		return errno
	}
	grow := size - st.Size
	if !f.q.take(grow) {
		return experimentalsys.EIO
	}
	if errno := f.File.Truncate(size); errno != 0 {
		f.q.give(grow)
		return errno
	}
	return 0
}
