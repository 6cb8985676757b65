// Package blob stores the bytes of datasets, algorithms and sealed results,
// addressed by their SHA-256 digest, on a local filesystem (FS) or in an
// S3-compatible bucket (S3).
//
// Addressing by content makes every object immutable: a digest names the
// same bytes forever, so storing known bytes again costs nothing, readers can
// verify what they receive (Verify), and garbage collection only has to
// compare the digests it finds (Walk) with the digests still referenced.
//
// FS and S3 have the same method set. Consumers declare the interface they
// need where they use it, so neither type is tied to a caller.
//
// Both stores lay objects out as sha256/<first two hex digits>/<other 62>,
// which keeps directories small on disk and listings cheap in S3, and both
// never let a partial or unverified object appear under a digest.
package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/covecompute/cove"
)

// Info describes one stored object.
type Info struct {
	SHA256 string // lowercase hex digest of the content
	Size   int64  // length of the content in bytes
}

// ErrMismatch is the cause carried by every error that reports content whose
// digest differs from the declared one. Callers that must tell a corrupted
// or substituted input from other failures, such as the agent failing a run
// with reason hash_mismatch, test for it with errors.Is.
var ErrMismatch = errors.New("hash_mismatch")

// mismatchMessage is the user-safe message of every mismatch error.
const mismatchMessage = "content does not match its declared SHA-256"

func mismatch(got, want string) error {
	return &cove.Error{
		Code:    cove.Invalid,
		Message: mismatchMessage,
		Err:     fmt.Errorf("%w: got sha256 %s, want %s", ErrMismatch, got, want),
	}
}

// ValidSHA256 reports whether s is a digest as this package writes them: 64
// lowercase hex characters. Digests reach the stores from API requests and
// manifests and become file names and object keys, so anything else (upper
// case, "../", slashes) is refused before it gets near a path.
func ValidSHA256(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func checkDigest(s string) error {
	if !ValidSHA256(s) {
		return cove.Errorf(cove.Invalid, "a SHA-256 digest must be 64 lowercase hexadecimal characters")
	}
	return nil
}

func notFound(sum string) error {
	return cove.Errorf(cove.NotFound, "no blob with SHA-256 %s", sum)
}

// canceled reports that ctx ended a call. It keeps ctx's error as the cause
// so callers can still test for context.Canceled or DeadlineExceeded.
func canceled(err error) error {
	return &cove.Error{Code: cove.Unavailable, Message: "the blob operation was canceled", Err: err}
}

// copyBufferSize is the buffer Put streams through. Large enough that the
// per-Read overhead (a ctx check, a hash call, a write syscall) is lost in
// the cost of hashing, small enough that concurrent uploads stay cheap.
const copyBufferSize = 256 << 10

// source is the content a Put reads. It hashes and counts what passes
// through, stops as soon as ctx ends, and at EOF fails with a mismatch error
// when the digest is not the declared one, so that a store streaming from
// it never completes an object with the wrong content. It remembers why
// reading stopped, so Put can tell the caller's failure from its own.
type source struct {
	ctx  context.Context
	r    io.Reader
	want string // declared digest, or "" when unknown
	h    hash.Hash
	n    int64
	eof  bool  // r ended and the digest matched
	err  error // sticky: the first failure, never io.EOF
}

func newSource(ctx context.Context, r io.Reader, want string) *source {
	return &source{ctx: ctx, r: r, want: want, h: sha256.New()}
}

func (s *source) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := s.ctx.Err(); err != nil {
		s.err = canceled(err)
		return 0, s.err
	}
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	switch {
	case err == io.EOF:
		if s.want != "" && s.sum() != s.want {
			s.err = mismatch(s.sum(), s.want)
			return n, s.err
		}
		s.eof = true
		return n, io.EOF
	case err != nil:
		s.err = readFailed(err)
		return n, s.err
	}
	return n, nil
}

// sum is the digest of what has been read so far; after EOF, of everything.
func (s *source) sum() string { return hex.EncodeToString(s.h.Sum(nil)) }

func (s *source) info() Info { return Info{SHA256: s.sum(), Size: s.n} }

// drain reads the rest of the content without storing it, for the case
// where the declared digest is stored already. The content is still read and
// hashed to the end: a caller who only knows a digest must not be able to
// claim, and then compute on, bytes that someone else uploaded.
func (s *source) drain() (Info, error) {
	// Hiding io.Discard's ReadFrom makes CopyBuffer use the larger buffer.
	if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, s, make([]byte, copyBufferSize)); err != nil {
		return Info{}, err
	}
	return s.info(), nil
}

// readFailed keeps a *cove.Error from the caller's reader as it is (a body
// limit's TooLarge, a Verify mismatch) and makes any other error internal:
// the store cannot know whether a broken reader is the client's fault.
func readFailed(err error) error {
	var ce *cove.Error
	if errors.As(err, &ce) {
		return err
	}
	return cove.Wrap(err, "reading the content to store failed")
}

// Verify returns a reader of r's bytes that fails at the end, instead of
// returning io.EOF, when they do not hash to sum. The error is Invalid and
// wraps ErrMismatch. Everything read before that error is unverified: a
// caller writes it somewhere it can discard, and trusts it only once Verify
// has returned io.EOF. An invalid sum fails the first Read. Errors of r pass
// through unchanged.
func Verify(r io.Reader, sum string) io.Reader {
	return &verifier{r: r, want: sum, h: sha256.New(), err: checkDigest(sum)}
}

type verifier struct {
	r    io.Reader
	want string
	h    hash.Hash
	err  error // sticky: an invalid want, or the mismatch once found
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			v.err = mismatch(got, v.want)
			return n, v.err
		}
	}
	return n, err
}
