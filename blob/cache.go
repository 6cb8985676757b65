package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/covecompute/cove"
)

// Cache keeps verified copies of blobs on a compute node's disk, named by
// their SHA-256 digest, so that a node running the same algorithm or
// dataset again does not fetch it again. It holds at most a bounded number
// of bytes and evicts the least recently used entries beyond that.
//
// An entry is verified when it is inserted (CacheWriter.Commit hashes what
// was written), but a cache on disk can still be damaged or tampered with
// afterwards. OpenTrusted says whether an entry's file is unchanged since
// this process last verified it (same size, modification time and inode); readers must verify anything else they read from it (Verify),
// report a good read with Verified, and Remove an entry that does not
// match. Entries left by an earlier process are verified at their first
// use.
//
// Cache is safe for concurrent use by one process; Lock serializes the
// callers of one digest so that only the first fetches it.
type Cache struct {
	objects string // dir/sha256: one file per digest
	tmp     string // dir/tmp: entries being written
	max     int64

	mu      sync.Mutex
	entries map[string]*cacheEntry
	size    int64                    // bytes of every entry
	busy    map[string]chan struct{} // digests held by Lock, closed on unlock
}

type cacheEntry struct {
	size int64
	used time.Time // last Open or Commit, the eviction order
	// stamp is the file as it was when this process last verified its
	// content; zero until then.
	stamp fileStamp
}

// fileStamp tells whether a file changed; see stampOf.
type fileStamp struct {
	size  int64
	mtime int64
	ino   uint64
}

// OpenCache opens the cache in dir, creating it if needed, bounded to
// maxBytes. Entries a previous process left are kept (oldest modification
// time evicted first) and entries under way are removed. Errors: Invalid
// for an empty dir or a bound that is not positive, Internal when dir
// cannot be used.
func OpenCache(dir string, maxBytes int64) (*Cache, error) {
	if dir == "" {
		return nil, cove.Errorf(cove.Invalid, "the cache directory must be set")
	}
	if maxBytes <= 0 {
		return nil, cove.Errorf(cove.Invalid, "the cache size must be positive, not %d bytes", maxBytes)
	}
	c := &Cache{
		objects: filepath.Join(dir, "sha256"),
		tmp:     filepath.Join(dir, "tmp"),
		max:     maxBytes,
		entries: map[string]*cacheEntry{},
		busy:    map[string]chan struct{}{},
	}
	if err := os.RemoveAll(c.tmp); err != nil {
		return nil, cove.Wrap(err, "cannot clear the cache's temporary files")
	}
	for _, d := range []string{c.objects, c.tmp} {
		if err := os.MkdirAll(d, fsDirPerm); err != nil {
			return nil, cove.Wrap(err, "cannot create the cache directory")
		}
	}
	files, err := os.ReadDir(c.objects)
	if err != nil {
		return nil, cove.Wrap(err, "cannot read the cache directory")
	}
	for _, f := range files {
		fi, err := f.Info()
		if err != nil || !fi.Mode().IsRegular() || !ValidSHA256(f.Name()) {
			_ = os.RemoveAll(filepath.Join(c.objects, f.Name()))
			continue
		}
		c.entries[f.Name()] = &cacheEntry{size: fi.Size(), used: fi.ModTime()}
		c.size += fi.Size()
	}
	c.mu.Lock()
	c.evict("")
	c.mu.Unlock()
	return c, nil
}

// Size is the number of bytes the cache holds.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// Lock waits until no other caller holds sum and holds it until unlock is
// called. A caller that finds no entry under the lock fetches the content
// and inserts it, and the callers waiting behind it then find the entry:
// concurrent runs of one digest fetch it once. Errors: Invalid for a
// malformed digest, Unavailable wrapping ctx's error if ctx ends first.
func (c *Cache) Lock(ctx context.Context, sum string) (unlock func(), err error) {
	if err := checkDigest(sum); err != nil {
		return nil, err
	}
	for {
		c.mu.Lock()
		held, ok := c.busy[sum]
		if !ok {
			ch := make(chan struct{})
			c.busy[sum] = ch
			c.mu.Unlock()
			return sync.OnceFunc(func() {
				c.mu.Lock()
				delete(c.busy, sum)
				c.mu.Unlock()
				close(ch)
			}), nil
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, canceled(ctx.Err())
		case <-held:
		}
	}
}

// Open opens the entry of sum for reading and marks it used. Its content
// is unverified: read it through Verify. Errors: NotFound when the cache
// has no such entry, Invalid for a malformed digest.
func (c *Cache) Open(sum string) (*os.File, error) {
	f, _, err := c.OpenTrusted(sum)
	return f, err
}

// OpenTrusted is Open that also reports whether the entry's file is the
// one this process verified last (Commit or Verified): then it may be read
// without hashing it again. Otherwise read it through Verify and call
// Verified after a read that passed.
func (c *Cache) OpenTrusted(sum string) (*os.File, bool, error) {
	if err := checkDigest(sum); err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	e := c.entries[sum]
	if e != nil {
		e.used = time.Now()
	}
	c.mu.Unlock()
	if e == nil {
		return nil, false, notFound(sum)
	}
	f, err := os.Open(filepath.Join(c.objects, sum))
	if errors.Is(err, fs.ErrNotExist) {
		c.forget(sum)
		return nil, false, notFound(sum)
	}
	if err != nil {
		return nil, false, cove.Wrap(err, "cannot open a cache entry")
	}
	fi, err := f.Stat()
	c.mu.Lock()
	trusted := err == nil && e.stamp != (fileStamp{}) && stampOf(fi) == e.stamp
	c.mu.Unlock()
	// The modification time orders entries across restarts; losing it
	// costs only a less apt eviction. Touching it changes the stamp, so a
	// trusted entry's is taken again.
	_ = os.Chtimes(f.Name(), time.Time{}, time.Now())
	if trusted {
		c.Verified(sum, f)
	}
	return f, trusted, nil
}

// Link makes dst a hard link to the entry of sum if OpenTrusted trusts it,
// so that a run gets a large input without a copy, and reports whether it
// did; otherwise (untrusted, or dst on another file system) read the entry
// instead. The link shares the entry's file, read-only: give it only to
// readers, such as a sandbox's inputs.
func (c *Cache) Link(sum, dst string) bool {
	f, trusted, err := c.OpenTrusted(sum)
	if err != nil {
		return false
	}
	defer f.Close()
	return trusted && os.Link(f.Name(), dst) == nil
}

// Verified records that f, the entry of sum, was read in full through
// Verify and matched: until its file changes, OpenTrusted trusts it.
func (c *Cache) Verified(sum string, f *os.File) {
	fi, err := f.Stat()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[sum]; e != nil && fi.Size() == e.size {
		e.stamp = stampOf(fi)
	}
}

// Remove deletes the entry of sum, if any: its content did not verify.
func (c *Cache) Remove(sum string) {
	if !ValidSHA256(sum) {
		return
	}
	c.forget(sum)
	_ = os.Remove(filepath.Join(c.objects, sum))
}

func (c *Cache) forget(sum string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[sum]; e != nil {
		c.size -= e.size
		delete(c.entries, sum)
	}
}

// Create starts an entry for sum, size bytes long. Errors: Invalid for a
// malformed digest, TooLarge when size alone exceeds the cache's bound (the
// caller then goes without the cache), Internal when the file cannot be
// created.
func (c *Cache) Create(sum string, size int64) (*CacheWriter, error) {
	if err := checkDigest(sum); err != nil {
		return nil, err
	}
	if size > c.max {
		return nil, cove.Errorf(cove.TooLarge, "%d bytes do not fit in a cache of %d", size, c.max)
	}
	f, err := os.CreateTemp(c.tmp, "entry-*")
	if err != nil {
		return nil, cove.Wrap(err, "cannot create a cache entry")
	}
	return &CacheWriter{c: c, f: f, sum: sum, size: size, h: sha256.New()}, nil
}

// CacheWriter writes one entry of a Cache. Nothing is visible under the
// digest until Commit has checked it.
type CacheWriter struct {
	c    *Cache
	f    *os.File
	sum  string
	size int64
	n    int64
	h    hash.Hash
	err  error // sticky
}

// Write appends p to the entry.
func (w *CacheWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.h.Write(p)
	n, err := w.f.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = cove.Wrap(err, "cannot write a cache entry")
	}
	return n, w.err
}

// Commit makes the entry visible if what was written has the digest and
// size it was created with, and evicts the least recently used entries
// beyond the cache's bound. The file is not synced: a crash may leave a
// damaged entry, which readers detect as they verify. Errors: Invalid
// wrapping ErrMismatch for other content, Internal for a failed write.
func (w *CacheWriter) Commit() error {
	defer w.Abort()
	if w.err != nil {
		return w.err
	}
	if got := hex.EncodeToString(w.h.Sum(nil)); got != w.sum || w.n != w.size {
		return mismatch(got, w.sum)
	}
	if err := w.f.Close(); err != nil {
		return cove.Wrap(err, "cannot write a cache entry")
	}
	// Entries are never written in place: read-only guards them against a
	// slip, Verify against the rest. Readable by all, since Link hands them
	// to sandboxes; the cache's own directory keeps others out.
	_ = os.Chmod(w.f.Name(), 0o444)
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.Rename(w.f.Name(), filepath.Join(c.objects, w.sum)); err != nil {
		return cove.Wrap(err, "cannot store a cache entry")
	}
	if old := c.entries[w.sum]; old != nil {
		c.size -= old.size
	}
	e := &cacheEntry{size: w.n, used: time.Now()}
	if fi, err := os.Stat(filepath.Join(c.objects, w.sum)); err == nil {
		e.stamp = stampOf(fi) // just hashed
	}
	c.entries[w.sum] = e
	c.size += w.n
	c.evict(w.sum)
	return nil
}

// Abort discards the entry unless Commit made it visible. It is safe to
// call more than once.
func (w *CacheWriter) Abort() {
	if w.f == nil {
		return
	}
	_ = w.f.Close()
	_ = os.Remove(w.f.Name()) // fails harmlessly once renamed
	w.f = nil
}

// evict removes the least recently used entries, never keep, until the
// cache fits its bound. A reader holding an evicted entry open reads on
// until it closes it. The caller holds c.mu.
func (c *Cache) evict(keep string) {
	if c.size <= c.max {
		return
	}
	byUse := make([]string, 0, len(c.entries))
	for sum := range c.entries {
		if sum != keep {
			byUse = append(byUse, sum)
		}
	}
	slices.SortFunc(byUse, func(a, b string) int { return c.entries[a].used.Compare(c.entries[b].used) })
	for _, sum := range byUse {
		if c.size <= c.max {
			return
		}
		c.size -= c.entries[sum].size
		delete(c.entries, sum)
		_ = os.Remove(filepath.Join(c.objects, sum))
	}
}
