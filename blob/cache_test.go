package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
)

// mustCache opens a cache of maxBytes in a fresh directory.
func mustCache(tb testing.TB, dir string, maxBytes int64) *blob.Cache {
	tb.Helper()
	c, err := blob.OpenCache(dir, maxBytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// mustInsert writes data into c under its digest and commits it.
func mustInsert(tb testing.TB, c *blob.Cache, data []byte) string {
	tb.Helper()
	sum := digest(data)
	w, err := c.Create(sum, int64(len(data)))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		tb.Fatal(err)
	}
	return sum
}

// readCached reads the entry of sum through Verify.
func readCached(c *blob.Cache, sum string) ([]byte, error) {
	f, err := c.Open(sum)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(blob.Verify(f, sum))
}

func TestCacheRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := mustCache(t, dir, 1<<20)
	data := randomBytes(100_000)
	sum := mustInsert(t, c, data)
	got, err := readCached(c, sum)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if c.Size() != int64(len(data)) {
		t.Errorf("Size = %d, want %d", c.Size(), len(data))
	}
	// A new process finds what the last one cached.
	c2 := mustCache(t, dir, 1<<20)
	if got, err := readCached(c2, sum); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after reopening: read %d bytes, %v", len(got), err)
	}
	if _, err := readCached(c2, digest([]byte("absent"))); cove.ErrorCode(err) != cove.NotFound {
		t.Errorf("Open of an absent digest = %v, want not_found", err)
	}
}

// A damaged entry reads as a mismatch, never as content, and Remove drops it.
func TestCacheDamagedEntry(t *testing.T) {
	for name, damage := range map[string]func([]byte) []byte{
		"FlippedByte": func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 1; return b },
		"Truncated":   func(b []byte) []byte { return b[:len(b)-1] },
		"Extended":    func(b []byte) []byte { return append(bytes.Clone(b), 0) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c := mustCache(t, dir, 1<<20)
			data := randomBytes(10_000)
			sum := mustInsert(t, c, data)
			path := filepath.Join(dir, "sha256", sum)
			if err := os.Chmod(path, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, damage(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := readCached(c, sum)
			mustMismatch(t, err)
			c.Remove(sum)
			if _, err := c.Open(sum); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("Open after Remove = %v, want not_found", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the damaged file is still there: %v", err)
			}
			if c.Size() != 0 {
				t.Errorf("Size = %d after Remove", c.Size())
			}
		})
	}
}

// Content that does not hash to the digest it was created for is never
// inserted.
func TestCacheCommitChecks(t *testing.T) {
	c := mustCache(t, t.TempDir(), 1<<20)
	data := randomBytes(1000)
	sum := digest(data)
	for name, written := range map[string][]byte{
		"Other":     randomBytes(1000),
		"Truncated": data[:999],
		"Nothing":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			w, err := c.Create(sum, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			w.Write(written)
			mustMismatch(t, w.Commit())
			if _, err := c.Open(sum); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("Open = %v, want not_found", err)
			}
		})
	}
	t.Run("Aborted", func(t *testing.T) {
		w, err := c.Create(sum, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Abort()
		if _, err := c.Open(sum); cove.ErrorCode(err) != cove.NotFound {
			t.Fatalf("Open = %v, want not_found", err)
		}
	})
}

// The cache never holds more than its bound, and what goes first is what
// was used least recently.
func TestCacheEviction(t *testing.T) {
	c := mustCache(t, t.TempDir(), 25_000)
	a := mustInsert(t, c, randomBytes(10_000))
	time.Sleep(2 * time.Millisecond) // distinct use times
	b := mustInsert(t, c, randomBytes(10_000))
	time.Sleep(2 * time.Millisecond)
	if _, err := readCached(c, a); err != nil { // a is now newer than b
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	d := mustInsert(t, c, randomBytes(10_000))
	if c.Size() > 25_000 {
		t.Errorf("Size = %d, over the bound", c.Size())
	}
	for sum, want := range map[string]bool{a: true, b: false, d: true} {
		if _, err := readCached(c, sum); (err == nil) != want {
			t.Errorf("entry present = %v, want %v (%v)", err == nil, want, err)
		}
	}
	if _, err := c.Create(digest([]byte("x")), 25_001); cove.ErrorCode(err) != cove.TooLarge {
		t.Errorf("Create over the bound = %v, want too_large", err)
	}
}

// A smaller bound at the next start evicts down to it.
func TestCacheEvictsOnOpen(t *testing.T) {
	dir := t.TempDir()
	c := mustCache(t, dir, 1<<20)
	for range 5 {
		mustInsert(t, c, randomBytes(10_000))
	}
	if small := mustCache(t, dir, 25_000); small.Size() > 25_000 {
		t.Errorf("Size = %d after reopening with a bound of 25000", small.Size())
	}
}

// Lock lets one caller at a time hold a digest, and a waiter give up.
func TestCacheLock(t *testing.T) {
	c := mustCache(t, t.TempDir(), 1<<20)
	sum := digest([]byte("locked"))
	unlock, err := c.Lock(context.Background(), sum)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Lock(ctx, sum); cove.ErrorCode(err) != cove.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held digest = %v, want unavailable after the deadline", err)
	}
	// Another digest is not held.
	other, err := c.Lock(context.Background(), digest([]byte("other")))
	if err != nil {
		t.Fatal(err)
	}
	other()
	got := make(chan error, 1)
	go func() {
		u, err := c.Lock(context.Background(), sum)
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Lock returned %v while the digest was held", err)
	case <-time.After(20 * time.Millisecond):
	}
	unlock()
	unlock() // harmless
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestCacheBadInput(t *testing.T) {
	if _, err := blob.OpenCache("", 1); cove.ErrorCode(err) != cove.Invalid {
		t.Errorf("OpenCache without a directory = %v, want invalid", err)
	}
	if _, err := blob.OpenCache(t.TempDir(), 0); cove.ErrorCode(err) != cove.Invalid {
		t.Errorf("OpenCache with no room = %v, want invalid", err)
	}
	c := mustCache(t, t.TempDir(), 1<<20)
	for _, sum := range []string{"", "../../etc/passwd", digest(nil)[:63] + "G"} {
		if _, err := c.Open(sum); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("Open(%q) = %v, want invalid", sum, err)
		}
		if _, err := c.Create(sum, 1); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("Create(%q) = %v, want invalid", sum, err)
		}
		if _, err := c.Lock(context.Background(), sum); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("Lock(%q) = %v, want invalid", sum, err)
		}
	}
}

// An entry is trusted without hashing only while its file is the one this
// process verified: not after it changed, nor in a new process until a
// read verified it.
func TestCacheTrust(t *testing.T) {
	dir := t.TempDir()
	c := mustCache(t, dir, 1<<20)
	data := randomBytes(10_000)
	sum := mustInsert(t, c, data)
	trusted := func(c *blob.Cache) bool {
		t.Helper()
		f, ok, err := c.OpenTrusted(sum)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		return ok
	}
	if !trusted(c) || !trusted(c) {
		t.Fatal("a committed entry is not trusted")
	}
	path := filepath.Join(dir, "sha256", sum)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil { // same bytes, rewritten
		t.Fatal(err)
	}
	if trusted(c) {
		t.Fatal("a rewritten entry is trusted")
	}
	// A read through Verify that passes makes it trusted again.
	f, ok, err := c.OpenTrusted(sum)
	if err != nil || ok {
		t.Fatalf("OpenTrusted = %v %v", ok, err)
	}
	if _, err := io.Copy(io.Discard, blob.Verify(f, sum)); err != nil {
		t.Fatal(err)
	}
	c.Verified(sum, f)
	f.Close()
	if !trusted(c) {
		t.Fatal("a verified entry is not trusted")
	}
	// A new process verifies what an earlier one left.
	if trusted(mustCache(t, dir, 1<<20)) {
		t.Fatal("an entry from an earlier process is trusted unverified")
	}
}

// Link hands out a trusted entry without a copy, and linking does not make
// the entry untrusted; an untrusted entry is not linked.
func TestCacheLink(t *testing.T) {
	dir := t.TempDir()
	c := mustCache(t, dir, 1<<20)
	data := randomBytes(10_000)
	sum := mustInsert(t, c, data)
	dst := filepath.Join(t.TempDir(), "input")
	if !c.Link(sum, dst) {
		t.Fatal("a trusted entry was not linked")
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("linked content: %v", err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("a linked input is writable: %v %v", fi.Mode(), err)
	}
	if !c.Link(sum, dst+"2") {
		t.Fatal("an entry is no longer trusted once linked")
	}
	if c.Link(sum, dst) {
		t.Fatal("linked over an existing file")
	}
	if mustCache(t, dir, 1<<20).Link(sum, dst+"3") {
		t.Fatal("an entry from an earlier process was linked unverified")
	}
}
