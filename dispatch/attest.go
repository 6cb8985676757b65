package dispatch

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
)

// inputIdle is how long an input blob stays open after its last chunk.
const inputIdle = 30 * time.Second

// Evidence kinds.
const kindNone = "none"

// manifest is a run's manifest as this replica caches it. It never changes
// for a run: the run pins its digest.
type manifest struct {
	canonical []byte
	sha       string
	m         *computation.Manifest
	inputs    map[string]int64 // digest -> size, of the algorithm and every dataset
}

// manifestOf returns the manifest of run, from this replica's cache or the
// store. Errors: those of Runs.Manifest; Internal when the store's manifest
// is not the one the run pinned.
func (d *Dispatcher) manifestOf(ctx context.Context, run *computation.Run) (*manifest, error) {
	d.mu.Lock()
	if l := d.runs[run.ID]; l != nil && l.man != nil {
		man := l.man
		d.mu.Unlock()
		return man, nil
	}
	d.mu.Unlock()

	canon, sum, m, err := d.cfg.Runs.Manifest(ctx, run.ID)
	if err != nil {
		return nil, err
	}
	if got := sha256.Sum256(canon); hex.EncodeToString(got[:]) != sum || run.ManifestSHA256 != "" && sum != run.ManifestSHA256 {
		return nil, cove.Errorf(cove.Internal, "the manifest of run %s does not match the digest the run pinned", run.ID)
	}
	man := &manifest{canonical: canon, sha: sum, m: m, inputs: map[string]int64{m.Algorithm.SHA256: m.Algorithm.Size}}
	for _, ds := range m.Datasets {
		man.inputs[ds.SHA256] = ds.Size
	}
	if run.State.Active() {
		d.mu.Lock()
		if !d.closed {
			d.localFor(run.ID).man = man
		}
		d.mu.Unlock()
	}
	return man, nil
}

// nonce is the attestation nonce of a run: HMAC-SHA256 under the nonce key
// of the run ID and the manifest digest. It is unpredictable without the
// key, so evidence cannot be prepared before the run exists, and it differs
// per run, so evidence of one run does not pass for another. Deriving it
// instead of drawing it at random lets every replica, and a restarted one,
// check it without storing it.
func (d *Dispatcher) nonce(run, manifestSHA string) string {
	mac := hmac.New(sha256.New, d.nonceKey)
	mac.Write([]byte("cove attestation nonce v1\x00"))
	mac.Write([]byte(run))
	mac.Write([]byte{0})
	mac.Write([]byte(manifestSHA))
	return hex.EncodeToString(mac.Sum(nil))
}

// handleManifest answers an agent's request for its manifest, while its run
// provisions or attests.
func (d *Dispatcher) handleManifest(m *nats.Msg) {
	runID, ok := d.runRequest(m)
	if !ok {
		return
	}
	ctx, cancel := d.handlerContext()
	defer cancel()
	rep, err := d.manifestReply(ctx, runID)
	if err != nil {
		rep = runproto.ManifestReply{Error: runproto.ErrorOf(err)}
	}
	d.replyJSON(m, rep, err)
}

func (d *Dispatcher) manifestReply(ctx context.Context, runID string) (runproto.ManifestReply, error) {
	run, err := d.cfg.Runs.FindRun(ctx, runID)
	if err != nil {
		return runproto.ManifestReply{}, err
	}
	if run.State != computation.Provisioning && run.State != computation.Attesting {
		return runproto.ManifestReply{}, cove.Errorf(cove.Conflict, "run %s is %s: its manifest is served while it provisions or attests", run.ID, run.State)
	}
	man, err := d.manifestOf(ctx, run)
	if err != nil {
		return runproto.ManifestReply{}, err
	}
	return runproto.ManifestReply{Manifest: man.canonical, SHA256: man.sha, Nonce: d.nonce(run.ID, man.sha)}, nil
}

// handleInputs serves RunInputs: OpAttest, then OpChunk.
func (d *Dispatcher) handleInputs(m *nats.Msg) {
	runID, ok := d.runRequest(m)
	if !ok {
		return
	}
	ctx, cancel := d.handlerContext()
	defer cancel()
	switch op := m.Header.Get(runproto.HeaderOp); op {
	case runproto.OpAttest:
		rep, err := d.attest(ctx, runID, m.Data)
		if err != nil {
			rep = runproto.InputsReply{Error: runproto.ErrorOf(err)}
		}
		d.replyJSON(m, rep, err)
	case runproto.OpChunk:
		d.serveChunk(ctx, runID, m)
	default:
		d.reply(m, nil, cove.Errorf(cove.Invalid, "unknown inputs operation %q", op))
	}
}

// attest checks an agent's evidence and, when it passes, moves the run to
// receiving and returns what the agent may fetch. The move is the durable
// record that the run attested: chunks are served only to runs in
// receiving, whichever replica is asked, and agents cannot report receiving
// themselves. Evidence that fails fails the run (attestation_failed).
func (d *Dispatcher) attest(ctx context.Context, runID string, body []byte) (runproto.InputsReply, error) {
	run, err := d.cfg.Runs.FindRun(ctx, runID)
	if err != nil {
		return runproto.InputsReply{}, err
	}
	switch run.State {
	case computation.Provisioning, computation.Attesting:
	case computation.Receiving:
		// A retry after a lost answer: the evidence is checked again.
	default:
		return runproto.InputsReply{}, cove.Errorf(cove.Conflict, "run %s is %s: it attests while it provisions or attests", run.ID, run.State)
	}
	man, err := d.manifestOf(ctx, run)
	if err != nil {
		return runproto.InputsReply{}, err
	}
	var ev runproto.Evidence
	if err := json.Unmarshal(body, &ev); err != nil {
		err = cove.Errorf(cove.Forbidden, "attestation failed: the evidence is not valid JSON")
		d.failRun(ctx, run.ID, computation.AttestationFailed, cove.ErrorMessage(err))
		return runproto.InputsReply{}, err
	}
	if err := verifyEvidence(ev, man, d.nonce(run.ID, man.sha)); err != nil {
		d.failRun(ctx, run.ID, computation.AttestationFailed, cove.ErrorMessage(err))
		return runproto.InputsReply{}, err
	}
	if run.State == computation.Provisioning {
		// The agent reports attesting itself, but its event may still be
		// on its way through the stream.
		if _, err := d.cfg.Runs.Advance(ctx, run.ID, computation.Attesting, computation.RunUpdate{}); err != nil {
			return runproto.InputsReply{}, err
		}
	}
	if run.State != computation.Receiving {
		msg := "attested with evidence of kind none: insecure, no TEE protects this run"
		if _, err := d.cfg.Runs.Advance(ctx, run.ID, computation.Receiving, computation.RunUpdate{Message: msg}); err != nil {
			return runproto.InputsReply{}, err
		}
	}
	a := man.m.Algorithm
	rep := runproto.InputsReply{
		Algorithm: runproto.Input{Name: "algorithm", Format: "file", FileName: a.FileName, SHA256: a.SHA256, Size: a.Size},
		Datasets:  make([]runproto.Input, 0, len(man.m.Datasets)),
	}
	for _, ds := range man.m.Datasets {
		rep.Datasets = append(rep.Datasets, runproto.Input{Name: ds.Name, Format: ds.Format, FileName: ds.FileName, SHA256: ds.SHA256, Size: ds.Size})
	}
	return rep, nil
}

// verifyEvidence fails closed: only evidence of kind "none" for a manifest
// that requires no TEE passes today, and only with report data that binds
// the manifest digest, the agent's key and the run's nonce. Verifying the
// signed reports of real TEEs (vtpm, sev-snp, tdx) is the attest package's
// job, still to come; until then such evidence is refused. The error is
// Forbidden, with a message for the run's participants.
func verifyEvidence(ev runproto.Evidence, man *manifest, nonce string) error {
	fail := func(why string) error {
		return cove.Errorf(cove.Forbidden, "attestation failed: %s", why)
	}
	required := man.m.RequiredTEE
	switch {
	case ev.Kind == "":
		return fail("the evidence names no kind")
	case ev.Kind != kindNone:
		return fail("evidence of kind " + strconv.Quote(ev.Kind) + " cannot be verified by this control plane yet")
	case required != "" && required != kindNone:
		return fail("the computation requires TEE " + strconv.Quote(required) + ", and evidence of kind none proves none")
	}
	if ev.ReportData == "" {
		return fail("the report data is empty")
	}
	want, err := reportData(man.sha, ev.PublicKey, nonce)
	if err != nil {
		return fail(err.Error())
	}
	got, err := hex.DecodeString(ev.ReportData)
	if err != nil || !hmac.Equal(got, want) {
		return fail("the report data does not bind the manifest, the agent's key and the nonce")
	}
	return nil
}

// reportData is SHA-512(manifest SHA-256 bytes || agent public key bytes ||
// nonce bytes), the hex strings decoded.
func reportData(manifestSHA, publicKey, nonce string) ([]byte, error) {
	sum, err := hex.DecodeString(manifestSHA)
	if err != nil || len(sum) != sha256.Size {
		return nil, errors.New("the manifest digest is malformed")
	}
	key, err := hex.DecodeString(publicKey)
	if err != nil || len(key) == 0 {
		return nil, errors.New("the agent's public key is missing or not hex")
	}
	n, err := hex.DecodeString(nonce)
	if err != nil || len(n) == 0 {
		return nil, errors.New("the nonce is malformed")
	}
	h := sha512.New()
	h.Write(sum)
	h.Write(key)
	h.Write(n)
	return h.Sum(nil), nil
}

// chunkBufs holds ChunkSize buffers for chunk replies.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, runproto.ChunkSize); return &b }}

// serveChunk answers OpChunk with up to ChunkSize raw bytes of an input
// from an offset, to an attested run (one in receiving) and only for a
// digest its manifest names. An offset at the end gets an empty body.
func (d *Dispatcher) serveChunk(ctx context.Context, runID string, m *nats.Msg) {
	sum := m.Header.Get(runproto.HeaderSHA256)
	off, err := strconv.ParseInt(m.Header.Get(runproto.HeaderOffset), 10, 64)
	if err != nil || off < 0 {
		d.reply(m, nil, cove.Errorf(cove.Invalid, "the chunk offset must be a non-negative integer"))
		return
	}
	run, err := d.cfg.Runs.FindRun(ctx, runID)
	if err != nil {
		d.reply(m, nil, err)
		return
	}
	if run.State != computation.Receiving {
		d.reply(m, nil, cove.Errorf(cove.Forbidden, "inputs are served to an attested agent while its run receives; run %s is %s", run.ID, run.State))
		return
	}
	man, err := d.manifestOf(ctx, run)
	if err != nil {
		d.reply(m, nil, err)
		return
	}
	size, ok := man.inputs[sum]
	if !ok {
		d.reply(m, nil, cove.Errorf(cove.Forbidden, "%q is not an input of run %s", sum, run.ID))
		return
	}
	if off > size {
		d.reply(m, nil, cove.Errorf(cove.Invalid, "offset %d is past the end of input %s (%d bytes)", off, sum, size))
		return
	}
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	p := (*bp)[:min(int64(runproto.ChunkSize), size-off)]
	if err := d.readInput(ctx, runID, sum, off, p); err != nil {
		d.reply(m, nil, err)
		return
	}
	d.reply(m, p, nil) // PublishMsg copies p before returning
}

// readInput fills p from the input blob sum at off. It keeps the blob open
// between chunks: at random offsets when the reader is an io.ReaderAt (a
// file), sequentially otherwise.
func (d *Dispatcher) readInput(ctx context.Context, run, sum string, off int64, p []byte) error {
	in, err := d.inputFor(ctx, run, sum)
	if err != nil {
		return err
	}
	err = in.readAt(p, off)
	if errors.Is(err, errRewind) {
		err = d.readFresh(ctx, sum, off, p)
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return cove.Errorf(cove.Internal, "input %s is shorter in the blob store than the manifest says", sum)
	case err != nil:
		var ce *cove.Error
		if errors.As(err, &ce) {
			return err
		}
		return cove.Wrap(err, "cannot read an input")
	}
	return nil
}

// readFresh reads p at off from a new reader of sum, for a reader that can
// neither seek nor read at an offset and is already past off.
func (d *Dispatcher) readFresh(ctx context.Context, sum string, off int64, p []byte) error {
	rc, _, err := d.cfg.Blobs.Open(ctx, sum)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		return err
	}
	_, err = io.ReadFull(rc, p)
	return err
}

// inputFor returns the open reader of input sum of run, opening it.
func (d *Dispatcher) inputFor(ctx context.Context, run, sum string) (*input, error) {
	d.mu.Lock()
	if l := d.runs[run]; l != nil && l.inputs[sum] != nil {
		in := l.inputs[sum]
		in.idle.Reset(inputIdle)
		d.mu.Unlock()
		return in, nil
	}
	d.mu.Unlock()

	rc, _, err := d.cfg.Blobs.Open(ctx, sum)
	if err != nil {
		return nil, err
	}
	in := &input{rc: rc}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		rc.Close()
		return nil, cove.Errorf(cove.Unavailable, "the control plane is shutting down")
	}
	l := d.localFor(run)
	if other := l.inputs[sum]; other != nil {
		rc.Close() // another request opened it meanwhile
		return other, nil
	}
	if l.inputs == nil {
		l.inputs = map[string]*input{}
	}
	l.inputs[sum] = in
	in.idle = time.AfterFunc(inputIdle, func() {
		d.mu.Lock()
		if l := d.runs[run]; l != nil && l.inputs[sum] == in {
			delete(l.inputs, sum)
		}
		d.mu.Unlock()
		in.close()
	})
	return in, nil
}

// errRewind says a sequential reader is already past the wanted offset.
var errRewind = errors.New("input reader is past the offset")

// input is an open input blob.
type input struct {
	mu     sync.RWMutex // ReadAt under R; sequential reads and close under W
	rc     io.ReadCloser
	pos    int64 // next offset of a sequential reader
	closed bool
	idle   *time.Timer
}

// readAt fills p from off. It returns errRewind when the reader can only go
// forward and is past off.
func (in *input) readAt(p []byte, off int64) error {
	if ra, ok := in.rc.(io.ReaderAt); ok {
		in.mu.RLock()
		defer in.mu.RUnlock()
		if in.closed {
			return errRewind
		}
		n, err := ra.ReadAt(p, off)
		if n == len(p) {
			return nil
		}
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return errRewind
	}
	if off != in.pos {
		if s, ok := in.rc.(io.Seeker); ok {
			if _, err := s.Seek(off, io.SeekStart); err != nil {
				return err
			}
		} else if off < in.pos {
			return errRewind
		} else if _, err := io.CopyN(io.Discard, in.rc, off-in.pos); err != nil {
			return err
		}
		in.pos = off
	}
	n, err := io.ReadFull(in.rc, p)
	in.pos += int64(n)
	return err
}

func (in *input) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return
	}
	in.closed = true
	if in.idle != nil {
		in.idle.Stop()
	}
	in.rc.Close()
}
