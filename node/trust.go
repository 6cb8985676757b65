package node

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/runproto"
)

// A node proves who it is with a client certificate from Cove's
// certificate authority (over mTLS) and a NATS user JWT for a key only it
// holds. Enrollment issues both, renewal replaces both, and revoking the
// certificate revokes the NATS user too: the node is cut off both ways and
// its runs fail with node_lost.

// credential is what issue hands out.
type credential struct {
	runproto.NodeCredential
	url string // what the node dials for NATS
}

// issue gets a certificate from sign and a NATS JWT that expires with it,
// and records both on n.
func (s *Service) issue(ctx context.Context, n *Node, sign func() (*Certificate, error)) (*credential, error) {
	if s.certs == nil {
		return nil, cove.Errorf(cove.Unavailable, "the control plane has no certificate authority to issue node certificates")
	}
	cert, err := sign()
	if err != nil {
		return nil, err
	}
	jwt, url, err := s.creds.IssueNodeCredential(n.ID, n.NATSUser, cert.NotAfter)
	if err != nil {
		return nil, err
	}
	exp := cert.NotAfter.UTC()
	n.CertificateSerial, n.CertificateExpiresAt, n.CredentialExpiresAt = cert.Serial, &exp, exp
	return &credential{
		NodeCredential: runproto.NodeCredential{Certificate: cert.PEM, Chain: cert.ChainPEM, JWT: jwt, Expires: exp},
		url:            url,
	}, nil
}

// Self returns the node that presented its certificate, for the node's own
// calls over mTLS. A revoked or removed node is unauthenticated.
func (s *Service) Self(ctx context.Context, nodeID string) (*Node, error) {
	n, err := s.store.FindNodeByID(ctx, nodeID)
	if cove.ErrorCode(err) == cove.NotFound {
		return nil, cove.Errorf(cove.Unauthenticated, "node %s is not enrolled (it was removed); enroll it again with a new token", nodeID)
	} else if err != nil {
		return nil, err
	}
	if n.RevokedAt != nil {
		return nil, cove.Errorf(cove.Unauthenticated, "node %s was revoked at %s; enroll it again as a new node with a new token",
			nodeID, n.RevokedAt.Format(time.RFC3339))
	}
	n.State = n.state()
	s.decorate(n)
	return n, nil
}

// Renew gives a node that authenticated with current a new certificate for
// csrPEM and a new NATS JWT for its NATS user, both expiring together.
// The node calls it at two thirds of its certificate's lifetime.
func (s *Service) Renew(ctx context.Context, nodeID string, current *x509.Certificate, r runproto.RenewRequest) (*runproto.NodeCredential, error) {
	n, err := s.Self(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	if r.CSR == "" {
		return nil, invalid("csr", "send a PEM certificate request for the node's key")
	}
	cred, err := s.issue(ctx, n, func() (*Certificate, error) {
		return s.certs.RenewNodeCertificate(ctx, nodeID, current, r.CSR)
	})
	if err != nil {
		return nil, err
	}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.SetNodeCertificate(ctx, n.ID, n.CertificateSerial, *n.CertificateExpiresAt, n.CredentialExpiresAt); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: s.now(), WorkspaceID: n.WorkspaceID, Action: "node.renew",
			Target: n.ID, Outcome: audit.Success, Detail: "new certificate " + n.CertificateSerial + " until " + n.CredentialExpiresAt.Format(time.RFC3339)})
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("node renewed its certificate", "node", n.ID, "serial", n.CertificateSerial, "expires", n.CredentialExpiresAt)
	return &cred.NodeCredential, nil
}

// CertificateRevoked cuts off the node whose certificate was revoked: its
// NATS user is revoked (the server closes its connections and refuses its
// JWTs), the scheduler forgets it, it is marked revoked for good and its
// active runs fail with node_lost. Calling it again does nothing new.
func (s *Service) CertificateRevoked(ctx context.Context, nodeID, serial string) error {
	n, err := s.store.FindNodeByID(ctx, nodeID)
	if cove.ErrorCode(err) == cove.NotFound {
		return nil // removed already
	} else if err != nil {
		return err
	}
	// NATS first: the node must lose its access even if what follows fails.
	if n.NATSUser != "" {
		if err := s.creds.RevokeNodeCredential(n.NATSUser); err != nil {
			return err
		}
	}
	s.forget(nodeID)
	now := s.now()
	if err := s.store.MarkNodeRevoked(ctx, nodeID, now); err != nil {
		return err
	}
	s.log.Warn("node cut off: its certificate was revoked", "node", nodeID, "name", n.Name, "serial", serial)
	s.audit(ctx, *n, "node.revoke", "certificate "+serial+" revoked; node cut off from HTTP and NATS")
	active, err := s.activeRuns(ctx, nodeID)
	if err != nil {
		return err
	}
	s.failRuns(ctx, active, "node "+n.Name+" ("+nodeID+") was cut off: its certificate was revoked")
	return nil
}
