package blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
)

// store is the method set FS and S3 share, declared here as a consumer
// would declare it.
type store interface {
	Put(ctx context.Context, r io.Reader, want string) (blob.Info, error)
	Open(ctx context.Context, sum string) (io.ReadCloser, blob.Info, error)
	Stat(ctx context.Context, sum string) (blob.Info, error)
	Delete(ctx context.Context, sum string) error
	Walk(ctx context.Context, fn func(blob.Info) error) error
}

var (
	_ store = (*blob.FS)(nil)
	_ store = (*blob.S3)(nil)
)

// harness is one store under test and a way to see what it left outside
// its committed objects: temporary files, temporary keys, incomplete
// multipart uploads.
type harness struct {
	store     store
	leftovers func(t testing.TB) []string
}

// partSize is the S3 part size the suite uses, so that its larger contents
// span several parts and failures can hit an upload in its middle.
const partSize = 5 << 20

// testStore runs the behaviour every store must have against a fresh store
// from newHarness per subtest.
func testStore(t *testing.T, newHarness func(t *testing.T) harness) {
	t.Run("PutOpenStatDelete", func(t *testing.T) {
		h := newHarness(t)
		ctx := context.Background()
		data := []byte("hello, cove")
		sum := digest(data)

		info, err := h.store.Put(ctx, bytes.NewReader(data), "")
		if err != nil {
			t.Fatal(err)
		}
		if want := (blob.Info{SHA256: sum, Size: int64(len(data))}); info != want {
			t.Fatalf("Put = %+v, want %+v", info, want)
		}
		if got := mustRead(t, h.store, sum); !bytes.Equal(got, data) {
			t.Fatalf("Open read %q, want %q", got, data)
		}
		if got, err := h.store.Stat(ctx, sum); err != nil || got != info {
			t.Fatalf("Stat = %+v, %v; want %+v", got, err, info)
		}
		if got := walk(t, h.store); len(got) != 1 || got[0] != info {
			t.Fatalf("Walk = %+v, want [%+v]", got, info)
		}

		if err := h.store.Delete(ctx, sum); err != nil {
			t.Fatal(err)
		}
		mustBeMissing(t, h.store, sum)
		if err := h.store.Delete(ctx, sum); err != nil {
			t.Fatalf("second Delete = %v, want nil", err)
		}
		mustBeClean(t, h)
	})

	t.Run("Empty", func(t *testing.T) {
		h := newHarness(t)
		info, err := h.store.Put(context.Background(), strings.NewReader(""), digest(nil))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != 0 || info.SHA256 != digest(nil) {
			t.Fatalf("Put = %+v", info)
		}
		if got := mustRead(t, h.store, info.SHA256); len(got) != 0 {
			t.Fatalf("read %d bytes, want 0", len(got))
		}
	})

	// Spans several S3 parts, for both ways S3 uploads: straight to the
	// final key (digest declared) and through a temporary key (not).
	for _, declared := range []bool{true, false} {
		name := map[bool]string{true: "LargeDeclared", false: "LargeUndeclared"}[declared]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			data := randomBytes(2*partSize + 12345)
			want := ""
			if declared {
				want = digest(data)
			}
			info, err := h.store.Put(context.Background(), bytes.NewReader(data), want)
			if err != nil {
				t.Fatal(err)
			}
			if info.SHA256 != digest(data) || info.Size != int64(len(data)) {
				t.Fatalf("Put = %+v", info)
			}
			if got := mustRead(t, h.store, info.SHA256); !bytes.Equal(got, data) {
				t.Fatal("content read back differs from content put")
			}
			mustBeClean(t, h)
		})
	}

	t.Run("Dedup", func(t *testing.T) {
		h := newHarness(t)
		ctx := context.Background()
		data := randomBytes(100_000)
		first, err := h.store.Put(ctx, bytes.NewReader(data), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"", first.SHA256} {
			r := &countingReader{r: bytes.NewReader(data)}
			again, err := h.store.Put(ctx, r, want)
			if err != nil {
				t.Fatalf("Put again (want %q): %v", want, err)
			}
			if again != first {
				t.Fatalf("Put again = %+v, want %+v", again, first)
			}
			// Known content is still read whole: the caller must prove it
			// has the bytes, not just their digest.
			if r.n != int64(len(data)) {
				t.Fatalf("Put again read %d bytes, want %d", r.n, len(data))
			}
		}
		if got := walk(t, h.store); len(got) != 1 {
			t.Fatalf("Walk found %d objects, want 1", len(got))
		}
		mustBeClean(t, h)
	})

	t.Run("DigestOnlyIsNotEnough", func(t *testing.T) {
		// Someone who knows the digest of stored content but not the
		// content must not get a successful Put.
		h := newHarness(t)
		ctx := context.Background()
		secret := []byte("someone else's dataset")
		if _, err := h.store.Put(ctx, bytes.NewReader(secret), ""); err != nil {
			t.Fatal(err)
		}
		_, err := h.store.Put(ctx, strings.NewReader("guess"), digest(secret))
		mustMismatch(t, err)
	})

	t.Run("WrongDeclaredDigest", func(t *testing.T) {
		for _, size := range []int{10, 2*partSize + 1} {
			h := newHarness(t)
			data := randomBytes(size)
			other := digest([]byte("something else"))
			_, err := h.store.Put(context.Background(), bytes.NewReader(data), other)
			mustMismatch(t, err)
			mustBeMissing(t, h.store, other)
			mustBeMissing(t, h.store, digest(data))
			mustBeClean(t, h)
		}
	})

	t.Run("ReaderFailsHalfway", func(t *testing.T) {
		errCut := errors.New("connection reset by peer")
		for _, declared := range []bool{true, false} {
			h := newHarness(t)
			data := randomBytes(3 * partSize)
			want := ""
			if declared {
				want = digest(data)
			}
			r := io.MultiReader(bytes.NewReader(data[:len(data)/2+7]), failingReader{errCut})
			_, err := h.store.Put(context.Background(), r, want)
			if !errors.Is(err, errCut) {
				t.Fatalf("declared=%v: Put = %v, want the reader's error", declared, err)
			}
			mustBeMissing(t, h.store, digest(data))
			mustBeMissing(t, h.store, digest(data[:len(data)/2+7]))
			mustBeClean(t, h)
		}
	})

	t.Run("ReaderCoveErrorKept", func(t *testing.T) {
		h := newHarness(t)
		tooLarge := cove.Errorf(cove.TooLarge, "the upload is over its limit")
		r := io.MultiReader(strings.NewReader("abc"), failingReader{tooLarge})
		_, err := h.store.Put(context.Background(), r, "")
		if cove.ErrorCode(err) != cove.TooLarge {
			t.Fatalf("Put = %v, want the reader's TooLarge", err)
		}
	})

	t.Run("CanceledHalfway", func(t *testing.T) {
		for _, declared := range []bool{true, false} {
			h := newHarness(t)
			data := randomBytes(3 * partSize)
			want := ""
			if declared {
				want = digest(data)
			}
			ctx, cancel := context.WithCancel(context.Background())
			rest := bytes.NewReader(data[len(data)/2:])
			r := io.MultiReader(bytes.NewReader(data[:len(data)/2]), readerFunc(func(p []byte) (int, error) {
				cancel()
				return rest.Read(p)
			}))
			_, err := h.store.Put(ctx, r, want)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("declared=%v: Put = %v, want context.Canceled", declared, err)
			}
			mustBeMissing(t, h.store, digest(data))
			mustBeClean(t, h)
		}
	})

	t.Run("ConcurrentSameContent", func(t *testing.T) {
		h := newHarness(t)
		data := randomBytes(1 << 20)
		want := blob.Info{SHA256: digest(data), Size: int64(len(data))}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Go(func() {
				declared := ""
				if i%2 == 0 {
					declared = want.SHA256
				}
				info, err := h.store.Put(context.Background(), bytes.NewReader(data), declared)
				if err == nil && info != want {
					err = errors.New("wrong info " + info.SHA256)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if got := walk(t, h.store); len(got) != 1 || got[0] != want {
			t.Fatalf("Walk = %+v, want [%+v]", got, want)
		}
		if got := mustRead(t, h.store, want.SHA256); !bytes.Equal(got, data) {
			t.Fatal("content read back differs from content put")
		}
		mustBeClean(t, h)
	})

	t.Run("InvalidDigests", func(t *testing.T) {
		h := newHarness(t)
		ctx := context.Background()
		valid := digest([]byte("x"))
		for _, sum := range []string{
			"../../etc/passwd",
			"../../etc",
			strings.Repeat("../", 21) + "a", // 64 characters
			strings.ToUpper(valid),
			valid[:63],
			valid + "0",
			valid[:30] + "/" + valid[31:],
			valid[:63] + "g",
			" " + valid[1:],
		} {
			if _, _, err := h.store.Open(ctx, sum); cove.ErrorCode(err) != cove.Invalid {
				t.Errorf("Open(%q) = %v, want invalid", sum, err)
			}
			if _, err := h.store.Stat(ctx, sum); cove.ErrorCode(err) != cove.Invalid {
				t.Errorf("Stat(%q) = %v, want invalid", sum, err)
			}
			if err := h.store.Delete(ctx, sum); cove.ErrorCode(err) != cove.Invalid {
				t.Errorf("Delete(%q) = %v, want invalid", sum, err)
			}
			if _, err := h.store.Put(ctx, strings.NewReader("x"), sum); cove.ErrorCode(err) != cove.Invalid {
				t.Errorf("Put(want %q) = %v, want invalid", sum, err)
			}
		}
		if got := walk(t, h.store); len(got) != 0 {
			t.Fatalf("Walk = %+v after rejected Puts, want nothing", got)
		}
	})

	t.Run("WalkStopsAtError", func(t *testing.T) {
		h := newHarness(t)
		ctx := context.Background()
		for i := range 3 {
			if _, err := h.store.Put(ctx, strings.NewReader(strings.Repeat("x", i+1)), ""); err != nil {
				t.Fatal(err)
			}
		}
		errStop := errors.New("stop")
		calls := 0
		err := h.store.Walk(ctx, func(blob.Info) error {
			calls++
			return errStop
		})
		if err != errStop || calls != 1 {
			t.Fatalf("Walk = %v after %d calls, want errStop after 1", err, calls)
		}
	})

	t.Run("WalkInDigestOrderAndDeleting", func(t *testing.T) {
		h := newHarness(t)
		ctx := context.Background()
		for i := range 20 {
			if _, err := h.store.Put(ctx, strings.NewReader(strings.Repeat("y", i+1)), ""); err != nil {
				t.Fatal(err)
			}
		}
		var seen []string
		// A garbage collector deletes as it walks.
		err := h.store.Walk(ctx, func(info blob.Info) error {
			seen = append(seen, info.SHA256)
			return h.store.Delete(ctx, info.SHA256)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 20 {
			t.Fatalf("Walk saw %d objects, want 20", len(seen))
		}
		for i := 1; i < len(seen); i++ {
			if seen[i-1] >= seen[i] {
				t.Fatalf("Walk out of order: %s before %s", seen[i-1], seen[i])
			}
		}
		if got := walk(t, h.store); len(got) != 0 {
			t.Fatalf("Walk after deleting everything = %+v", got)
		}
	})
}

func TestFS(t *testing.T) {
	testStore(t, func(t *testing.T) harness {
		dir := t.TempDir()
		s := mustFS(t, dir)
		return harness{store: s, leftovers: func(t testing.TB) []string {
			return dirNames(t, filepath.Join(dir, "tmp"))
		}}
	})
}

func TestFSLayout(t *testing.T) {
	dir := t.TempDir()
	s := mustFS(t, dir)
	data := []byte("layout")
	sum := digest(data)
	if _, err := s.Put(context.Background(), bytes.NewReader(data), sum); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "sha256", sum[:2], sum[2:]))
	if err != nil {
		t.Fatalf("object not at sha256/ab/cdef...: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("object mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Join(dir, "sha256", sum[:2]))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("fan-out directory: %v, %v; want mode 0700", di, err)
	}
}

func TestFSRemovesStaleTemp(t *testing.T) {
	dir := t.TempDir()
	mustFS(t, dir)
	stale := filepath.Join(dir, "tmp", "put-stale")
	fresh := filepath.Join(dir, "tmp", "put-fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	mustFS(t, dir)
	if got := dirNames(t, filepath.Join(dir, "tmp")); len(got) != 1 || got[0] != "put-fresh" {
		t.Fatalf("tmp holds %v, want only put-fresh: an upload in progress must survive", got)
	}
}

func TestFSWalkIgnoresForeignFiles(t *testing.T) {
	dir := t.TempDir()
	s := mustFS(t, dir)
	for _, p := range []string{"sha256/README", "sha256/zz/not-a-digest", "sha256/abc/" + strings.Repeat("0", 61)} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := walk(t, s); len(got) != 0 {
		t.Fatalf("Walk = %+v, want nothing", got)
	}
}

// TestFSPutConstantMemory puts 1 GiB and checks that Put allocated a few
// buffers' worth, not the content.
func TestFSPutConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 1 GiB")
	}
	const size = 1 << 30
	s := mustFS(t, t.TempDir())
	r := io.LimitReader(rand.NewChaCha8([32]byte{1}), size)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	info, err := s.Put(context.Background(), r, "")
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != size {
		t.Fatalf("stored %d bytes, want %d", info.Size, size)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("Put of 1 GiB allocated %d bytes", alloc)
	if alloc > 8<<20 {
		t.Fatalf("Put of 1 GiB allocated %d bytes; it must stream", alloc)
	}
}

func mustFS(t testing.TB, dir string) *blob.FS {
	t.Helper()
	s, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// randomBytes returns n bytes that differ between calls, so that contents
// of different tests never deduplicate against each other.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	rand.NewChaCha8(seed).Read(b)
	return b
}

func mustRead(t testing.TB, s store, sum string) []byte {
	t.Helper()
	rc, info, err := s.Open(context.Background(), sum)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(blob.Verify(rc, sum))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != info.Size {
		t.Fatalf("Open said %d bytes, read %d", info.Size, len(b))
	}
	return b
}

func mustBeMissing(t testing.TB, s store, sum string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), sum); cove.ErrorCode(err) != cove.NotFound {
		t.Fatalf("Stat(%s) = %v, want not_found", sum, err)
	}
	if _, _, err := s.Open(context.Background(), sum); cove.ErrorCode(err) != cove.NotFound {
		t.Fatalf("Open(%s) = %v, want not_found", sum, err)
	}
}

func mustBeClean(t testing.TB, h harness) {
	t.Helper()
	if left := h.leftovers(t); len(left) != 0 {
		t.Fatalf("store left behind %v", left)
	}
}

func mustMismatch(t testing.TB, err error) {
	t.Helper()
	if cove.ErrorCode(err) != cove.Invalid || !errors.Is(err, blob.ErrMismatch) {
		t.Fatalf("err = %v, want invalid wrapping ErrMismatch", err)
	}
	if msg := cove.ErrorMessage(err); msg != "content does not match its declared SHA-256" {
		t.Fatalf("message %q", msg)
	}
}

func walk(t testing.TB, s store) []blob.Info {
	t.Helper()
	var got []blob.Info
	if err := s.Walk(context.Background(), func(info blob.Info) error {
		got = append(got, info)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
