package blob

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config locates a bucket of an S3-compatible object store.
type S3Config struct {
	Endpoint  string // host[:port], without a scheme: "s3.amazonaws.com", "127.0.0.1:9000"
	Bucket    string // created by NewS3 when missing
	Region    string // may be empty for stores that ignore regions
	AccessKey string // with SecretKey, signs requests; both empty for anonymous access
	SecretKey string // a secret: never log it
	UseTLS    bool   // https; only local test servers should run without it
	Prefix    string // key prefix, so several deployments can share a bucket
	// PartSize is the size of one part of a multipart upload, and so the
	// memory one Put holds: minio-go buffers a part before sending it. An
	// object may have up to 10,000 parts. 0 means DefaultPartSize; the
	// minimum S3 allows is 5 MiB.
	PartSize uint64
	// Transport, when not nil, carries the requests instead of minio-go's
	// default transport: to trust a private CA, or to reach a test server.
	Transport http.RoundTripper
}

// DefaultPartSize holds 16 MiB per upload in memory and allows objects of up
// to 156 GiB. minio-go would otherwise pick ~537 MiB parts for uploads of
// unknown size, far too much memory for a server running many of them.
const DefaultPartSize = 16 << 20

// minPartSize is the smallest part S3 accepts for all but the last part.
const minPartSize = 5 << 20

// maxCopySize is the largest object S3 copies in one request; larger ones
// are copied part by part.
const maxCopySize = 5 << 30

// cleanupTimeout bounds the removal of a temporary object after a failed
// or finished Put, which runs even when the caller's ctx has ended.
const cleanupTimeout = time.Minute

// S3 stores blobs in a bucket, under Prefix + "sha256/ab/cdef...". It is the
// store of production deployments, shared by every `cove serve` replica. S3
// is safe for concurrent use.
//
// An upload in progress is an incomplete multipart upload, which no listing
// or read shows; content whose digest was not declared then waits under
// Prefix + "tmp/" for its server-side copy. A process that dies mid-upload
// leaves these behind: give the bucket a lifecycle rule that aborts
// incomplete multipart uploads and expires Prefix + "tmp/" after a day.
type S3 struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or ending in "/"
	partSize uint64
}

// NewS3 connects to the bucket described by cfg, creating the bucket when it
// does not exist. It returns Invalid for an incomplete cfg and Unavailable
// when the store cannot be reached.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, cove.Errorf(cove.Invalid, "the S3 endpoint and bucket must be set")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < minPartSize {
		return nil, cove.Errorf(cove.Invalid, "the S3 part size must be at least 5 MiB")
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.UseTLS,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: "the S3 endpoint is not valid", Err: err}
	}
	s := &S3{client: client, bucket: cfg.Bucket, partSize: cfg.PartSize}
	if p := strings.Trim(cfg.Prefix, "/"); p != "" {
		s.prefix = p + "/"
	}

	exists, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, s.fail(ctx, err, "the blob store is unavailable")
	}
	if !exists {
		err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
		// Another replica starting at the same time may have won the race.
		if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
			return nil, s.fail(ctx, err, "creating the blob bucket failed")
		}
	}
	return s, nil
}

func (s *S3) key(sum string) string {
	return s.prefix + "sha256/" + sum[:2] + "/" + sum[2:]
}

// fail turns an error of the S3 client into a cove error. The store being
// out of reach is the likely cause, so Unavailable; an ended ctx is
// reported as such whatever the client made of it.
func (s *S3) fail(ctx context.Context, err error, msg string) error {
	if ctx.Err() != nil {
		return canceled(ctx.Err())
	}
	return &cove.Error{Code: cove.Unavailable, Message: msg, Err: err}
}

func isNoSuchKey(err error) bool {
	return minio.ToErrorResponse(err).Code == minio.NoSuchKey
}

// Put streams r into the bucket and returns its digest and size, holding at
// most one part (S3Config.PartSize) in memory. Errors are those of FS.Put:
// Invalid wrapping ErrMismatch when the content does not hash to a non-empty
// want, the error of ctx or r when they fail, and in every failure nothing
// under the digest.
//
// With want declared, the content goes straight to its final key as a
// multipart upload whose last read fails on a mismatch: S3 shows a multipart
// object only once it is completed, and minio-go aborts the upload instead
// of completing it when reading fails. Without want, the digest is known
// only at the end, so the content goes to a unique temporary key first and
// is then copied server-side to its final key; the copy is atomic, so the
// final key never holds a partial object either.
func (s *S3) Put(ctx context.Context, r io.Reader, want string) (Info, error) {
	if want == "" {
		return s.putUnknown(ctx, r)
	}
	if err := checkDigest(want); err != nil {
		return Info{}, err
	}
	src := newSource(ctx, r, want)
	switch _, err := s.Stat(ctx, want); cove.ErrorCode(err) {
	case "":
		return src.drain()
	case cove.NotFound:
	default:
		return Info{}, err
	}
	if err := s.upload(ctx, s.key(want), src); err != nil {
		return Info{}, err
	}
	return src.info(), nil
}

func (s *S3) putUnknown(ctx context.Context, r io.Reader) (Info, error) {
	src := newSource(ctx, r, "")
	tmp := s.prefix + "tmp/" + cove.NewID("put")
	if err := s.upload(ctx, tmp, src); err != nil {
		return Info{}, err
	}
	defer s.remove(ctx, tmp)

	info := src.info()
	switch _, err := s.Stat(ctx, info.SHA256); cove.ErrorCode(err) {
	case "":
		return info, nil // stored already
	case cove.NotFound:
	default:
		return Info{}, err
	}
	// Either way the final key appears only once the copy is complete.
	dst := minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(info.SHA256)}
	from := minio.CopySrcOptions{Bucket: s.bucket, Object: tmp}
	var err error
	if info.Size <= maxCopySize {
		_, err = s.client.CopyObject(ctx, dst, from)
	} else {
		_, err = s.client.ComposeObject(ctx, dst, from)
	}
	if err != nil {
		return Info{}, s.fail(ctx, err, "storing the blob failed")
	}
	return info, nil
}

// upload streams src to key. When it fails because src did (ctx ended, the
// caller's reader broke, the digest did not match), it returns src's error.
func (s *S3) upload(ctx context.Context, key string, src *source) error {
	opts := minio.PutObjectOptions{PartSize: s.partSize, ContentType: "application/octet-stream"}
	// An upload of unknown size is a multipart upload, and an empty one
	// would consist of a single empty part, which not every S3-compatible
	// store accepts. Empty content, which an empty result can be, goes as a
	// plain PUT; peeking costs a 16-byte buffer.
	br := bufio.NewReaderSize(src, 16)
	size := int64(-1)
	if _, err := br.Peek(1); err == io.EOF {
		size = 0
	} else if err != nil {
		return src.err
	}
	_, err := s.client.PutObject(ctx, s.bucket, key, br, size, opts)
	if err != nil {
		if src.err != nil {
			return src.err
		}
		return s.fail(ctx, err, "uploading the blob failed")
	}
	if !src.eof {
		// minio-go completes an upload only once its reader has returned
		// io.EOF, which is when src checks the digest. Should that ever
		// change, key holds bytes nobody verified, and must not stay.
		s.remove(ctx, key)
		return cove.Wrap(errors.New("the S3 client completed an upload before the end of its content"), "uploading the blob failed")
	}
	return nil
}

// remove deletes an object Put must not leave behind. It is best effort:
// Put has its answer already, and the bucket's lifecycle rule collects what
// this misses. It runs on a context of its own because the caller's may be
// what ended the Put.
func (s *S3) remove(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
}

// Open returns the content stored under sum, read as the caller reads; the
// caller closes it, and ending ctx ends the download. It returns Invalid for
// a malformed digest and NotFound when nothing is stored under it. Content
// coming over a network should reach its final user through Verify.
func (s *S3) Open(ctx context.Context, sum string) (io.ReadCloser, Info, error) {
	if err := checkDigest(sum); err != nil {
		return nil, Info{}, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.key(sum), minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, s.fail(ctx, err, "reading the blob failed")
	}
	// GetObject is lazy; Stat sends the request, so a missing object is
	// reported here and not at the caller's first Read.
	oi, err := obj.Stat()
	if err != nil {
		obj.Close()
		if isNoSuchKey(err) {
			return nil, Info{}, notFound(sum)
		}
		return nil, Info{}, s.fail(ctx, err, "reading the blob failed")
	}
	return obj, Info{SHA256: sum, Size: oi.Size}, nil
}

// Stat returns the size of the content stored under sum: Invalid for a
// malformed digest, NotFound when nothing is stored under it.
func (s *S3) Stat(ctx context.Context, sum string) (Info, error) {
	if err := checkDigest(sum); err != nil {
		return Info{}, err
	}
	oi, err := s.client.StatObject(ctx, s.bucket, s.key(sum), minio.StatObjectOptions{})
	if err != nil {
		if isNoSuchKey(err) {
			return Info{}, notFound(sum)
		}
		return Info{}, s.fail(ctx, err, "reading the blob failed")
	}
	return Info{SHA256: sum, Size: oi.Size}, nil
}

// Delete removes the content stored under sum. Deleting what is not stored
// succeeds, as S3 deletes do. It returns Invalid for a malformed digest.
func (s *S3) Delete(ctx context.Context, sum string) error {
	if err := checkDigest(sum); err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, s.key(sum), minio.RemoveObjectOptions{}); err != nil {
		return s.fail(ctx, err, "deleting the blob failed")
	}
	return nil
}

// Walk calls fn for every stored object, in digest order (S3 lists keys in
// order), for garbage collection and audits. fn may Delete the object it is
// given. Walk stops at the first error fn returns and returns it unchanged,
// or when ctx ends. Objects put or deleted during the walk may or may not be
// seen.
func (s *S3) Walk(ctx context.Context, fn func(Info) error) error {
	// Ending the listing early needs its context canceled, or minio-go's
	// listing goroutine would wait forever to hand over the next page.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := s.prefix + "sha256/"
	for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: base, Recursive: true}) {
		if oi.Err != nil {
			return s.fail(ctx, oi.Err, "listing blobs failed")
		}
		fan, rest, ok := strings.Cut(strings.TrimPrefix(oi.Key, base), "/")
		sum := fan + rest
		if !ok || len(fan) != 2 || !ValidSHA256(sum) {
			continue // not ours: leave it for a person to look at
		}
		if err := fn(Info{SHA256: sum, Size: oi.Size}); err != nil {
			return err
		}
	}
	// The listing ends silently when ctx does.
	if err := ctx.Err(); err != nil {
		return canceled(err)
	}
	return nil
}
