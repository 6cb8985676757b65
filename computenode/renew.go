package computenode

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/runproto"
)

// A node renews its certificate and NATS JWT by itself at two thirds of
// their lifetime, over mTLS with the certificate it holds. A renewal that
// fails is tried again, more often as the expiry nears; a node whose
// certificate was revoked is refused and stops trying: its NATS access
// ends with the revocation, so it stops too.

// Renewal timing.
const (
	renewAt       = 2.0 / 3 // of the certificate's lifetime
	minRenewRetry = time.Second
	maxRenewRetry = time.Minute
)

// useCredential makes id the node's current credential: its client
// certificate for HTTP and its JWT and nkey for NATS (new connections and
// reconnections pick them up).
func (n *Node) useCredential(id identity) error {
	cert, err := id.tlsCertificate()
	if err != nil {
		return err
	}
	kp, err := nkeys.FromSeed([]byte(id.NATSSeed))
	if err != nil {
		return &cove.Error{Code: cove.Invalid, Message: "node.json holds no valid NATS key", Err: err}
	}
	n.credMu.Lock()
	defer n.credMu.Unlock()
	if n.natsKey != nil {
		n.natsKey.Wipe()
	}
	n.ident, n.tlsCert, n.natsKey = id, &cert, kp
	return nil
}

// natsJWT and natsSign authenticate the node's NATS connection with its
// current credential.
func (n *Node) natsJWT() (string, error) {
	n.credMu.RLock()
	defer n.credMu.RUnlock()
	return n.ident.JWT, nil
}

func (n *Node) natsSign(nonce []byte) ([]byte, error) {
	n.credMu.RLock()
	defer n.credMu.RUnlock()
	return n.natsKey.Sign(nonce)
}

func (n *Node) current() identity {
	n.credMu.RLock()
	defer n.credMu.RUnlock()
	return n.ident
}

// mtls reports whether the node can call the control plane with its
// certificate: only over HTTPS.
func (n *Node) mtls() bool { return strings.HasPrefix(n.current().ServerURL, "https://") }

// checkSelf asks the control plane who the node is, over mTLS. A node the
// control plane refuses (revoked, removed) does not start; one that
// cannot reach it starts anyway, since runs come over NATS.
func (n *Node) checkSelf(ctx context.Context) error {
	if !n.mtls() {
		n.log.Warn("the control plane is plain HTTP: the node cannot prove itself with its certificate nor renew it", "server", n.current().ServerURL)
		return nil
	}
	var self struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	err := call(ctx, n.http, http.MethodGet, n.current().ServerURL+SelfPath, nil, &self)
	switch cove.ErrorCode(err) {
	case "":
		n.log.Info("the control plane knows the node", "state", self.State)
		return nil
	case cove.Unauthenticated, cove.Forbidden:
		return cove.Errorf(cove.ErrorCode(err), "%s; remove %s and enroll the node again with a new token",
			cove.ErrorMessage(err), filepath.Join(n.cfg.DataDir, identityFile))
	default:
		n.log.Warn("cannot check the node with the control plane; starting anyway", "err", err)
		return nil
	}
}

// renewLoop renews the credential at two thirds of its lifetime until ctx
// ends.
func (n *Node) renewLoop(ctx context.Context) {
	defer close(n.renewDone)
	if !n.mtls() {
		return
	}
	for {
		// At least a second apart, whatever the clocks say.
		wait := max(time.Until(renewTime(n.current())), minRenewRetry)
		if !sleep(ctx, wait) {
			return
		}
		err := n.renew(ctx)
		for err != nil {
			if code := cove.ErrorCode(err); code == cove.Unauthenticated || code == cove.Forbidden {
				n.log.Error("the control plane refused to renew the node's certificate; the node stops when it expires", "err", err)
				return
			}
			retry := min(max(time.Until(n.current().Expires)/10, minRenewRetry), maxRenewRetry)
			n.log.Warn("could not renew the node's certificate; trying again", "err", err, "in", retry)
			if !sleep(ctx, retry) {
				return
			}
			err = n.renew(ctx)
		}
	}
}

// renewTime is when a credential is due for renewal: two thirds of the
// way from when the node received it to its expiry. The certificate's
// NotBefore is not used: the CA backdates it to absorb clock skew.
func renewTime(id identity) time.Time {
	got := id.EnrolledAt
	if id.RenewedAt.After(got) {
		got = id.RenewedAt
	}
	if got.IsZero() || !got.Before(id.Expires) {
		return id.Expires
	}
	return got.Add(time.Duration(float64(id.Expires.Sub(got)) * renewAt))
}

// renew gets a new certificate for a new key, and a new NATS JWT, saves
// them and makes them current. The NATS connection reconnects with the new
// JWT at once, so the old one expiring does not cut it.
func (n *Node) renew(ctx context.Context) error {
	id := n.current()
	key, csr, err := NewKey(id.NodeID)
	if err != nil {
		return err
	}
	var cred runproto.NodeCredential
	if err := call(ctx, n.http, http.MethodPost, id.ServerURL+RenewPath, runproto.RenewRequest{CSR: csr}, &cred); err != nil {
		return err
	}
	if cred.Certificate == "" || cred.JWT == "" {
		return cove.Errorf(cove.Internal, "the renewal answer lacks the certificate or the NATS JWT")
	}
	id.Key, id.NodeCredential, id.RenewedAt = key, cred, time.Now().UTC()
	if err := n.useCredential(id); err != nil {
		return err
	}
	if err := saveIdentity(filepath.Join(n.cfg.DataDir, identityFile), id); err != nil {
		return err
	}
	n.log.Info("renewed the node's certificate", "expires", cred.Expires)
	if n.nc != nil {
		if err := n.nc.ForceReconnect(); err != nil {
			n.log.Warn("could not reconnect to NATS with the new JWT; it is used at the next reconnection", "err", err)
		}
	}
	return nil
}

// sleep waits d or until ctx ends, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
