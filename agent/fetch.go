package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// fetchWindow is how many chunk requests are in flight at once. One chunk
// per round trip leaves the link idle while the control plane reads its
// blob store; a few keep both busy without holding much memory
// (fetchWindow × ChunkSize).
const fetchWindow = 8

// input is one blob to fetch, as the manifest pins it.
type input struct {
	name   string // "algorithm" or the dataset name, for messages
	sha256 string
	size   int64
}

// receive fetches the algorithm and every dataset into the work directory,
// each verified against the manifest.
func (r *run) receive(ctx context.Context, m *computation.Manifest) error {
	a := m.Algorithm
	err := r.fetchFile(ctx, input{name: "algorithm", sha256: a.SHA256, size: a.Size},
		filepath.Join(r.ws.algorithm, a.FileName), 0o600)
	if err != nil {
		return err
	}
	for _, d := range m.Datasets {
		in := input{name: "dataset " + d.Name, sha256: d.SHA256, size: d.Size}
		dir := filepath.Join(r.ws.inputs, d.Name)
		if d.Format == "tar" {
			err = r.fetchTar(ctx, in, dir)
		} else {
			if err = os.Mkdir(dir, 0o755); err != nil {
				return fail(computation.Internal, err, "cannot set up the inputs")
			}
			err = r.fetchFile(ctx, in, filepath.Join(dir, d.FileName), 0o644)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fetchFile fetches in into the file path: a hard link to the node's cache
// when it holds in verified (then read-only, whatever mode says), else a
// new file with mode.
func (r *run) fetchFile(ctx context.Context, in input, path string, mode os.FileMode) error {
	if r.cfg.Cache != nil && r.cfg.Cache.Link(in.sha256, path) {
		r.log.Debug("linked from the cache", "input", in.name, "bytes", in.size)
		return nil
	}
	return r.fetch(ctx, in, path, func(src io.Reader) error {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		// Hiding the file's ReadFrom makes CopyBuffer use the larger
		// buffer: fewer reads and writes per byte hashed.
		_, err = io.CopyBuffer(struct{ io.Writer }{f}, src, make([]byte, copyBuffer))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// copyBuffer is the buffer an input is copied into its file with.
const copyBuffer = 256 << 10

// fetchTar fetches in, a tar archive, and unpacks it into dir as it comes.
func (r *run) fetchTar(ctx context.Context, in input, dir string) error {
	return r.fetch(ctx, in, dir, func(src io.Reader) error {
		// An archive never unpacks to more than its own size (ExtractTar
		// charges a header block per entry), and the stream is exactly
		// in.size bytes long, so the bound is the size itself.
		err := blob.ExtractTar(src, dir, max(in.size, 1))
		if err != nil {
			// A tampered archive often fails to parse before its digest can
			// be checked: read it to the end so the digest decides.
			if _, derr := io.Copy(io.Discard, src); errors.Is(derr, blob.ErrMismatch) {
				return derr
			}
		}
		return err
	})
}

// fetch gives in to consume, which must read its reader to the end and
// write only to dst (a file or a directory it creates). The bytes come from
// the node's input cache when it holds in's digest, and from the control
// plane otherwise; either way through a SHA-256 check against the manifest.
// Nothing consume wrote may be trusted unless fetch returns nil; on error
// the work directory is discarded with the run.
//
// A cache entry is hashed on its way to consume unless this process
// verified it and its file is unchanged since (blob.Cache.OpenTrusted).
// One that does not match its digest is removed, dst with it, and in is
// fetched again from the control plane: a damaged cache costs time, never
// a run. Under the cache's lock for in's digest, runs of one input
// fetch it once and the others read what the first one cached.
func (r *run) fetch(ctx context.Context, in input, dst string, consume func(io.Reader) error) error {
	c := r.cfg.Cache
	if c == nil {
		return r.fetchRemote(ctx, in, consume, nil)
	}
	lock := func() (func(), error) {
		unlock, err := c.Lock(ctx, in.sha256)
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, fail(computation.Internal, err, "cannot receive "+in.name+": "+cove.ErrorMessage(err))
		}
		return unlock, nil
	}
	unlock, err := lock()
	if err != nil {
		return err
	}
	if f, trusted, err := c.OpenTrusted(in.sha256); err == nil {
		// Only filling an entry needs the digest to itself: readers of
		// one entry copy it side by side. An entry this process verified
		// and whose file has not changed since is not hashed again.
		unlock()
		var src io.Reader = blob.Verify(f, in.sha256)
		if trusted {
			src = io.LimitReader(f, in.size)
		}
		cerr := consume(src)
		if cerr == nil && !trusted {
			c.Verified(in.sha256, f)
		}
		f.Close()
		if !errors.Is(cerr, blob.ErrMismatch) {
			if cerr == nil {
				r.log.Debug("received from the cache", "input", in.name, "bytes", in.size, "hashed", !trusted)
			}
			return r.verdict(ctx, in, nil, cerr)
		}
		r.log.Warn("a cached input does not match its digest: fetching it again", "input", in.name, "sha256", in.sha256)
		if unlock, err = lock(); err != nil {
			return err
		}
		// Another run may have refilled the entry meanwhile: removing a
		// good one costs a fetch, keeping a bad one would cost every run.
		c.Remove(in.sha256)
		_ = makeWritable(dst)
		if err := os.RemoveAll(dst); err != nil {
			unlock()
			return fail(computation.Internal, err, "cannot write "+in.name)
		}
	}
	defer unlock()
	cw, err := c.Create(in.sha256, in.size)
	if err != nil {
		r.log.Debug("not caching an input", "input", in.name, "err", err)
		cw = nil
	}
	err = r.fetchRemote(ctx, in, consume, cw)
	switch {
	case cw == nil:
	case err != nil:
		cw.Abort()
	default:
		if err := cw.Commit(); err != nil {
			r.log.Warn("cannot cache an input", "input", in.name, "err", err)
		}
	}
	return err
}

// fetchRemote streams in from the control plane through a SHA-256 check
// into consume, and into cw when it is not nil. A failing cw does not fail
// the fetch: its Commit reports it.
func (r *run) fetchRemote(ctx context.Context, in input, consume func(io.Reader) error, cw *blob.CacheWriter) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := consume(blob.Verify(pr, in.sha256))
		pr.CloseWithError(errConsumerDone) // unblocks a writer if consume stopped early
		done <- err
	}()
	var w io.Writer = pw
	if cw != nil {
		w = teeCache{cw: cw, w: pw}
	}
	ferr := r.stream(ctx, in, w)
	pw.CloseWithError(ferr) // nil: the consumer sees EOF, and the digest is checked
	cerr := <-done
	if err := r.verdict(ctx, in, ferr, cerr); err != nil {
		return err
	}
	r.log.Debug("received", "input", in.name, "bytes", in.size)
	return nil
}

// teeCache writes to w and, while it accepts them, to a cache entry.
type teeCache struct {
	cw *blob.CacheWriter
	w  io.Writer
}

func (t teeCache) Write(p []byte) (int, error) {
	_, _ = t.cw.Write(p) // sticky: Commit returns the error
	return t.w.Write(p)
}

// verdict is the run's view of a fetch that ended with ferr on the
// sending side and cerr on the consuming side.
func (r *run) verdict(ctx context.Context, in input, ferr, cerr error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case ferr != nil && !errors.Is(ferr, errConsumerDone):
		return ferr
	case errors.Is(cerr, blob.ErrMismatch):
		return fail(computation.HashMismatch, cerr, in.name+" does not match the SHA-256 of the manifest")
	case cove.ErrorCode(cerr) == cove.TooLarge || cove.ErrorCode(cerr) == cove.Invalid:
		return fail(computation.Internal, cerr, in.name+" is not a valid archive: "+cove.ErrorMessage(cerr))
	case cerr != nil:
		return fail(computation.Internal, cerr, "cannot write "+in.name)
	}
	return nil
}

var errConsumerDone = errors.New("the consumer stopped reading")

// stream requests the chunks of in, up to fetchWindow at a time, and writes
// them to w in order. Each reply must be exactly the bytes asked for: a
// short or long chunk means the content is not what the manifest pins.
func (r *run) stream(ctx context.Context, in input, w io.Writer) error {
	n := int((in.size + runproto.ChunkSize - 1) / runproto.ChunkSize)
	if n == 0 {
		return nil
	}
	rs, err := newReplies(r.nc, fetchWindow)
	if err != nil {
		return err
	}
	defer rs.close()

	subject := natsbus.RunInputs(r.id)
	chunkLen := func(i int) int {
		return int(min(runproto.ChunkSize, in.size-int64(i)*runproto.ChunkSize))
	}
	send := func(i int) error {
		msg := nats.NewMsg(subject)
		msg.Reply = rs.subject(i)
		msg.Header.Set(runproto.HeaderOp, runproto.OpChunk)
		msg.Header.Set(runproto.HeaderSHA256, in.sha256)
		msg.Header.Set(runproto.HeaderOffset, strconv.FormatInt(int64(i)*runproto.ChunkSize, 10))
		if err := r.nc.PublishMsg(msg); err != nil {
			return &cove.Error{Code: cove.Unavailable, Message: "cannot request " + in.name, Err: err}
		}
		return nil
	}

	pending := make(map[int][]byte, fetchWindow) // answered, not yet written
	lost := map[int]bool{}                       // answered "no responders"
	next, written := 0, 0                        // next chunk to request, next chunk to write
	silent := 0                                  // rounds without an answer, in a row
	resend := func() error {
		// Requests or answers were lost, or nobody listened (the control
		// plane restarting): wait, then ask again for what is missing.
		if silent++; silent >= attempts {
			return fail(computation.Internal, nil, "the control plane stopped sending "+in.name)
		}
		if err := sleep(ctx, retryDelay<<(silent-1)); err != nil {
			return err
		}
		clear(lost)
		for j := written; j < next; j++ {
			if pending[j] == nil {
				if err := send(j); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for written < n {
		for ; next < n && next-written < fetchWindow; next++ {
			if err := send(next); err != nil {
				return err
			}
		}
		i, msg, err := rs.next(ctx, requestTimeout)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			if err := resend(); err != nil {
				return err
			}
			continue
		case i < written || i >= next || pending[i] != nil || lost[i]:
			continue // a duplicate or a stray reply
		case noResponders(msg):
			lost[i] = true
			if len(pending)+len(lost) == next-written { // nothing else in flight
				if err := resend(); err != nil {
					return err
				}
			}
			continue
		}
		silent = 0
		if err := replyError(msg); err != nil {
			return fail(computation.Internal, err, "the control plane could not send "+in.name+": "+cove.ErrorMessage(err))
		}
		if len(msg.Data) != chunkLen(i) {
			return fail(computation.HashMismatch,
				fmt.Errorf("chunk %d of %s has %d bytes, want %d", i, in.sha256, len(msg.Data), chunkLen(i)),
				in.name+" does not match the size in the manifest")
		}
		pending[i] = msg.Data
		for ; pending[written] != nil; written++ {
			if _, err := w.Write(pending[written]); err != nil {
				return err
			}
			delete(pending, written)
		}
	}
	return nil
}
