package blob

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/covecompute/cove"
)

// fsDirPerm is the mode of the directories FS creates. Blobs are
// confidential datasets and results, so only the server's own user may read
// them; os.CreateTemp already gives files the matching 0600.
const fsDirPerm = 0o700

// staleTemp is the age past which NewFS removes a temporary file: by then
// the Put that wrote it has certainly ended, most likely with a crash.
const staleTemp = 24 * time.Hour

// FS stores blobs in a local directory: objects at sha256/ab/cdef..., and
// uploads in progress under tmp/, on the same filesystem so that the final
// rename is atomic. It is the store of `cove serve --dev`. FS is safe for
// concurrent use, also by several processes sharing the directory.
type FS struct {
	dir     string // root given to NewFS
	objects string // dir/sha256
	tmp     string // dir/tmp
}

// NewFS returns a store rooted at dir, creating it if needed. It removes
// temporary files that crashed uploads left more than a day ago.
func NewFS(dir string) (*FS, error) {
	if dir == "" {
		return nil, cove.Errorf(cove.Invalid, "the blob directory must be set")
	}
	s := &FS{dir: dir, objects: filepath.Join(dir, "sha256"), tmp: filepath.Join(dir, "tmp")}
	for _, d := range []string{s.objects, s.tmp} {
		if err := os.MkdirAll(d, fsDirPerm); err != nil {
			return nil, cove.Wrap(err, "creating the blob directory failed")
		}
	}
	s.removeStaleTemp(time.Now().Add(-staleTemp))
	return s, nil
}

// removeStaleTemp is best effort: a file it cannot remove now is retried at
// the next start and costs only disk space meanwhile.
func (s *FS) removeStaleTemp(before time.Time) {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(before) {
			os.Remove(filepath.Join(s.tmp, e.Name()))
		}
	}
}

func (s *FS) path(sum string) string {
	return filepath.Join(s.objects, sum[:2], sum[2:])
}

// Put streams r into the store and returns its digest and size. The content
// goes to a temporary file while it is hashed, is synced to disk, and only
// then renamed to its digest, so a crash or a failure never leaves a partial
// object under a digest.
//
// If want is not empty and the content hashes to something else, Put stores
// nothing and returns an Invalid error wrapping ErrMismatch. If ctx ends or
// r fails before EOF, Put stores nothing and returns the error: ctx's as an
// Unavailable error wrapping it, r's unchanged if it is a *cove.Error and as
// an Internal one otherwise. Storing content that is already stored succeeds
// and changes nothing, but r is still read and hashed to the end: a caller
// who knows only a digest must not be able to claim content someone else
// uploaded.
func (s *FS) Put(ctx context.Context, r io.Reader, want string) (Info, error) {
	src := newSource(ctx, r, want)
	if want != "" {
		if err := checkDigest(want); err != nil {
			return Info{}, err
		}
		if _, err := os.Stat(s.path(want)); err == nil {
			return src.drain()
		}
	}

	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return Info{}, cove.Wrap(err, "creating a temporary blob file failed")
	}
	tmp := f.Name()
	kept := false
	defer func() {
		if !kept {
			f.Close()
			os.Remove(tmp)
		}
	}()

	// Hiding f's ReadFrom makes CopyBuffer use buf instead of a small
	// internal one; src is a plain reader, so ReadFrom could not splice.
	if _, err := io.CopyBuffer(struct{ io.Writer }{f}, src, make([]byte, copyBufferSize)); err != nil {
		if src.err != nil {
			return Info{}, src.err
		}
		return Info{}, cove.Wrap(err, "writing the blob failed")
	}
	if err := f.Sync(); err != nil {
		return Info{}, cove.Wrap(err, "syncing the blob failed")
	}
	if err := f.Close(); err != nil {
		return Info{}, cove.Wrap(err, "closing the blob failed")
	}

	info := src.info()
	final := s.path(info.SHA256)
	if fi, err := os.Stat(final); err == nil && fi.Size() == info.Size {
		return info, nil // stored already; the deferred cleanup drops tmp
	}
	// A file of the wrong size under the digest can only be damage, and the
	// rename below repairs it.
	fan := filepath.Dir(final)
	newFan := false
	if err := os.Mkdir(fan, fsDirPerm); err == nil {
		newFan = true
	} else if !errors.Is(err, fs.ErrExist) {
		return Info{}, cove.Wrap(err, "creating a blob directory failed")
	}
	// Concurrent Puts of the same content may both rename; the last one
	// replaces identical bytes, which readers cannot tell apart.
	if err := os.Rename(tmp, final); err != nil {
		return Info{}, cove.Wrap(err, "moving the blob into place failed")
	}
	kept = true
	// Without syncing the directories, a power loss could lose the rename,
	// or the fan-out directory holding it, after Put reported success.
	if err := syncDir(fan); err != nil {
		return Info{}, cove.Wrap(err, "syncing the blob directory failed")
	}
	if newFan {
		if err := syncDir(s.objects); err != nil {
			return Info{}, cove.Wrap(err, "syncing the blob directory failed")
		}
	}
	return info, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open returns the content stored under sum. The caller closes it. It
// returns Invalid for a malformed digest and NotFound when nothing is
// stored under it. The bytes are what Put verified; a reader that must not
// trust the disk wraps them in Verify.
func (s *FS) Open(ctx context.Context, sum string) (io.ReadCloser, Info, error) {
	if err := checkDigest(sum); err != nil {
		return nil, Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, Info{}, canceled(err)
	}
	f, err := os.Open(s.path(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Info{}, notFound(sum)
	} else if err != nil {
		return nil, Info{}, cove.Wrap(err, "opening the blob failed")
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, cove.Wrap(err, "reading the blob's size failed")
	}
	return f, Info{SHA256: sum, Size: fi.Size()}, nil
}

// Stat returns the size of the content stored under sum: Invalid for a
// malformed digest, NotFound when nothing is stored under it.
func (s *FS) Stat(ctx context.Context, sum string) (Info, error) {
	if err := checkDigest(sum); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, canceled(err)
	}
	fi, err := os.Stat(s.path(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, notFound(sum)
	} else if err != nil {
		return Info{}, cove.Wrap(err, "reading the blob's size failed")
	}
	return Info{SHA256: sum, Size: fi.Size()}, nil
}

// Delete removes the content stored under sum. Deleting what is not stored
// succeeds, so a garbage collector can retry after a crash. Readers that
// opened the object before keep reading it. It returns Invalid for a
// malformed digest.
func (s *FS) Delete(ctx context.Context, sum string) error {
	if err := checkDigest(sum); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return canceled(err)
	}
	// The fan-out directory stays: removing it could race with a Put that
	// has just created it and is about to rename into it.
	if err := os.Remove(s.path(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return cove.Wrap(err, "deleting the blob failed")
	}
	return nil
}

// Walk calls fn for every stored object, in digest order, for garbage
// collection and audits. fn may Delete the object it is given. Walk stops at
// the first error fn returns and returns it unchanged, or when ctx ends.
// Objects put or deleted during the walk may or may not be seen.
func (s *FS) Walk(ctx context.Context, fn func(Info) error) error {
	fans, err := os.ReadDir(s.objects)
	if err != nil {
		return cove.Wrap(err, "listing blobs failed")
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.objects, fan.Name()))
		if err != nil {
			return cove.Wrap(err, "listing blobs failed")
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return canceled(err)
			}
			sum := fan.Name() + e.Name()
			if !e.Type().IsRegular() || !ValidSHA256(sum) {
				continue // not ours: leave it for a person to look at
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since the listing
			} else if err != nil {
				return cove.Wrap(err, "listing blobs failed")
			}
			if err := fn(Info{SHA256: sum, Size: fi.Size()}); err != nil {
				return err
			}
		}
	}
	return nil
}
