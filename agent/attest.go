package agent

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// EvidenceKindNone is the evidence of an agent outside any TEE: it binds
// the manifest and the agent's key, but nothing vouches for the host.
const EvidenceKindNone = "none"

// attest fetches and checks the manifest, then proves to the control plane
// which manifest this agent holds and which key it owns. It returns the
// manifest once the control plane has accepted the evidence.
func (r *run) attest(ctx context.Context) (*computation.Manifest, error) {
	var mr runproto.ManifestReply
	if err := requestJSON(ctx, r.nc, natsbus.RunManifest(r.id), "", nil, &mr, requestTimeout, attempts); err != nil {
		return nil, err
	}
	if err := mr.Error.Err(); err != nil {
		return nil, fail(computation.Internal, err, "the control plane did not release the manifest: "+cove.ErrorMessage(err))
	}
	sum := sha256.Sum256(mr.Manifest)
	want, err := hex.DecodeString(mr.SHA256)
	if err != nil || len(want) != sha256.Size || !bytes.Equal(sum[:], want) {
		return nil, fail(computation.HashMismatch, fmt.Errorf("manifest sha256 %x, announced %q", sum, mr.SHA256),
			"the manifest does not match its announced SHA-256")
	}
	nonce, err := hex.DecodeString(mr.Nonce)
	if err != nil || len(nonce) == 0 {
		return nil, fail(computation.Internal, err, "the control plane sent no valid attestation nonce")
	}
	var m computation.Manifest
	dec := json.NewDecoder(bytes.NewReader(mr.Manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fail(computation.Internal, err, "the manifest cannot be read")
	}
	if err := checkManifest(&m); err != nil {
		return nil, err
	}

	// The key lives only in this process. It is what the attestation binds
	// the agent to; a TEE driver will report it in hardware-signed
	// evidence, and the control plane can seal secrets to it.
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fail(computation.Internal, err, "cannot create the agent key")
	}
	pub := key.PublicKey().Bytes()
	ev := runproto.Evidence{
		Kind:       EvidenceKindNone,
		PublicKey:  hex.EncodeToString(pub),
		ReportData: ReportData(sum[:], pub, nonce),
	}
	var ir runproto.InputsReply
	if err := requestJSON(ctx, r.nc, natsbus.RunInputs(r.id), runproto.OpAttest, ev, &ir, requestTimeout, attempts); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fail(computation.AttestationFailed, err, "the control plane refused the attestation: "+cove.ErrorMessage(err))
	}
	if err := ir.Error.Err(); err != nil {
		return nil, fail(computation.AttestationFailed, err, "the control plane refused the attestation: "+cove.ErrorMessage(err))
	}
	if err := matchInputs(&m, &ir); err != nil {
		return nil, err
	}
	r.log.Info("attested", "manifest", mr.SHA256, "datasets", len(m.Datasets))
	return &m, nil
}

// ReportData is the report data of the agent's evidence: the hex SHA-512 of
// the manifest's SHA-256, the agent's public key and the control plane's
// nonce, as raw bytes in that order. The control plane recomputes it.
func ReportData(manifestSHA256, publicKey, nonce []byte) string {
	h := sha512.New()
	h.Write(manifestSHA256)
	h.Write(publicKey)
	h.Write(nonce)
	return hex.EncodeToString(h.Sum(nil))
}

// checkManifest rejects a manifest the agent cannot act on safely. Names
// become paths in the work directory, so they are checked here rather than
// trusted; a bad manifest is the control plane's fault (internal).
func checkManifest(m *computation.Manifest) error {
	bad := func(format string, args ...any) error {
		return fail(computation.Internal, nil, "the manifest is invalid: "+fmt.Sprintf(format, args...))
	}
	if m.Version != computation.ManifestVersion {
		return bad("version %d is not supported", m.Version)
	}
	a := m.Algorithm
	if !blob.ValidSHA256(a.SHA256) || a.Size < 0 || !validFileName(a.FileName) {
		return bad("the algorithm's digest, size or file name")
	}
	seen := map[string]bool{}
	for _, d := range m.Datasets {
		if !validDatasetName(d.Name) || seen[d.Name] {
			return bad("dataset name %q is not a unique [a-z0-9_-] name", d.Name)
		}
		seen[d.Name] = true
		if !blob.ValidSHA256(d.SHA256) || d.Size < 0 {
			return bad("dataset %s has no valid digest or size", d.Name)
		}
		switch d.Format {
		case "file":
			if !validFileName(d.FileName) {
				return bad("dataset %s has no valid file name", d.Name)
			}
		case "tar":
		default:
			return bad("dataset %s has format %q", d.Name, d.Format)
		}
	}
	if len(m.ResultConsumers) == 0 {
		return bad("it names no result consumer")
	}
	for _, c := range m.ResultConsumers {
		if _, err := age.ParseX25519Recipient(c.Recipient); err != nil {
			return bad("result consumer %s has no valid age X25519 recipient", c.UserID)
		}
	}
	l := m.Limits
	if l.CPUs < 0 || l.MemoryBytes < 0 || l.DiskBytes < 0 || l.MaxDurationSeconds < 0 {
		return bad("limits must not be negative")
	}
	return nil
}

// matchInputs checks that what the control plane offers to send is what
// the manifest pins. The agent fetches by the manifest's digests anyway;
// a difference means the control plane is wrong or lying.
func matchInputs(m *computation.Manifest, ir *runproto.InputsReply) error {
	mismatch := func(what string) error {
		return fail(computation.HashMismatch, nil, what+" offered by the control plane differs from the manifest")
	}
	if ir.Algorithm.SHA256 != m.Algorithm.SHA256 || ir.Algorithm.Size != m.Algorithm.Size {
		return mismatch("the algorithm")
	}
	if len(ir.Datasets) != len(m.Datasets) {
		return mismatch("the list of datasets")
	}
	offered := make(map[string]runproto.Input, len(ir.Datasets))
	for _, in := range ir.Datasets {
		offered[in.Name] = in
	}
	for _, d := range m.Datasets {
		in, ok := offered[d.Name]
		if !ok || in.SHA256 != d.SHA256 || in.Size != d.Size || in.Format != d.Format {
			return mismatch("dataset " + d.Name)
		}
	}
	return nil
}

// validDatasetName accepts the directory names a sandbox mounts inputs
// under: [a-z0-9_-], at most 64 characters.
func validDatasetName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	})
}

// validFileName accepts one path component that is not special.
func validFileName(s string) bool {
	return s != "" && len(s) <= 255 && s != "." && s != ".." &&
		!strings.ContainsAny(s, "/\\\x00") && filepath.Base(s) == s
}
