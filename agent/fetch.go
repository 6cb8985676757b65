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

// fetchFile fetches in into the file path.
func (r *run) fetchFile(ctx context.Context, in input, path string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fail(computation.Internal, err, "cannot write the inputs")
	}
	err = r.fetch(ctx, in, func(src io.Reader) error {
		_, err := io.Copy(f, src)
		return err
	})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fail(computation.Internal, cerr, "cannot write the inputs")
	}
	return err
}

// fetchTar fetches in, a tar archive, and unpacks it into dir as it comes.
func (r *run) fetchTar(ctx context.Context, in input, dir string) error {
	return r.fetch(ctx, in, func(src io.Reader) error {
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

// fetch streams in from the control plane through a SHA-256 check into
// consume, which must read its reader to the end. Nothing consume wrote
// may be trusted unless fetch returns nil; on error the work directory is
// discarded with the run.
func (r *run) fetch(ctx context.Context, in input, consume func(io.Reader) error) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := consume(blob.Verify(pr, in.sha256))
		pr.CloseWithError(errConsumerDone) // unblocks a writer if consume stopped early
		done <- err
	}()
	ferr := r.stream(ctx, in, pw)
	pw.CloseWithError(ferr) // nil: the consumer sees EOF, and the digest is checked
	cerr := <-done

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
	r.log.Debug("received", "input", in.name, "bytes", in.size)
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
