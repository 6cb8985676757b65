package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"

	"filippo.io/age"
	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

var errUploadDone = errors.New("the upload stopped reading")

// publish seals the outputs to the manifest's result consumers and uploads
// them: a tar archive of the output directory (blob.WriteTar), encrypted
// with age as it is written, streamed in chunks. The plain archive exists
// only in memory, a chunk at a time.
func (r *run) publish(ctx context.Context, m *computation.Manifest) error {
	recipients := make([]age.Recipient, 0, len(m.ResultConsumers))
	names := make([]string, 0, len(m.ResultConsumers))
	for _, c := range m.ResultConsumers {
		rc, err := age.ParseX25519Recipient(c.Recipient)
		if err != nil { // checkManifest let it pass: a bug
			return fail(computation.Internal, err, "a result consumer has no valid recipient")
		}
		recipients = append(recipients, rc)
		names = append(names, c.Recipient)
	}
	files, err := countFiles(r.ws.outputs)
	if err != nil {
		return fail(computation.Internal, err, "cannot read the outputs")
	}

	subject := natsbus.RunResults(r.id)
	// A begin is not repeated: a second one finds the first's upload open.
	if err := requestJSON(ctx, r.nc, subject, runproto.OpBegin, runproto.ResultBegin{Recipients: names}, nil, requestTimeout, 1); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail(computation.Internal, err, "the control plane refused the results: "+cove.ErrorMessage(err))
	}

	pr, pw := io.Pipe()
	sealed := make(chan error, 1)
	go func() { sealed <- seal(pw, r.ws.outputs, recipients) }()
	commit, uerr := r.upload(ctx, pr)
	pr.CloseWithError(errUploadDone) // stops the sealer if the upload stopped first
	serr := <-sealed

	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case cove.ErrorCode(serr) == cove.Invalid:
		// WriteTar refuses what the algorithm left: a link out of the
		// output directory, a device, a pipe.
		return fail(computation.AlgorithmError, serr, "the outputs cannot be published: "+cove.ErrorMessage(serr))
	case serr != nil && !errors.Is(serr, errUploadDone):
		return fail(computation.Internal, serr, "cannot seal the outputs")
	case uerr != nil:
		return uerr
	}
	commit.Files = files
	if err := requestJSON(ctx, r.nc, subject, runproto.OpCommit, commit, nil, commitTimeout, attempts); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail(computation.Internal, err, "the control plane did not store the results: "+cove.ErrorMessage(err))
	}
	r.log.Info("results published", "sha256", commit.SHA256, "bytes", commit.Size, "files", commit.Files)
	return nil
}

// seal writes the archive of dir, encrypted to recipients, into pw.
func seal(pw *io.PipeWriter, dir string, recipients []age.Recipient) error {
	enc, err := age.Encrypt(pw, recipients...)
	if err == nil {
		err = blob.WriteTar(enc, dir)
		if err == nil {
			err = enc.Close()
		}
	}
	pw.CloseWithError(err) // nil: the reader sees EOF
	return err
}

// upload sends what src yields as numbered chunks on RunResults and
// returns the commit of what it sent. Each chunk waits for the previous
// one's acknowledgement: the control plane handles requests concurrently,
// so chunks in flight together could be stored out of order.
func (r *run) upload(ctx context.Context, src io.Reader) (runproto.ResultCommit, error) {
	subject := natsbus.RunResults(r.id)
	h := sha256.New()
	var size int64
	buf := make([]byte, runproto.ChunkSize)
	for seq := 1; ; seq++ {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			msg := nats.NewMsg(subject)
			msg.Header.Set(runproto.HeaderOp, runproto.OpChunk)
			msg.Header.Set(runproto.HeaderSeq, strconv.Itoa(seq))
			msg.Data = buf[:n]
			reply, err := request(ctx, r.nc, msg, requestTimeout, attempts)
			if err == nil {
				err = checkReply(reply.Data)
			}
			if err != nil {
				if ctx.Err() != nil {
					return runproto.ResultCommit{}, ctx.Err()
				}
				return runproto.ResultCommit{}, fail(computation.Internal, err, "the control plane refused the results: "+cove.ErrorMessage(err))
			}
			h.Write(buf[:n])
			size += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return runproto.ResultCommit{}, rerr
		}
	}
	return runproto.ResultCommit{SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}, nil
}

// countFiles counts what WriteTar archives as files: regular files, and
// links to regular files inside dir.
func countFiles(dir string) (int, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	n := 0
	err = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type().IsRegular():
			n++
		case d.Type()&fs.ModeSymlink != 0:
			if fi, err := fs.Stat(root.FS(), name); err == nil && fi.Mode().IsRegular() {
				n++
			}
		}
		return nil
	})
	return n, err
}
