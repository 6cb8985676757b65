package app

import (
	"context"
	"crypto/x509"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/ca"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/node"
)

// nodeCertificates is the CA as the node registry and the HTTP API use it:
// nodes get their client certificates at enrollment and renewal, and
// present them over mTLS.
type nodeCertificates struct{ ca *ca.Service }

var (
	_ node.Certificates    = nodeCertificates{}
	_ httpapi.NodeVerifier = nodeCertificates{}
)

func nodeCertificate(is *ca.Issued) *node.Certificate {
	return &node.Certificate{Serial: is.Certificate.Serial, PEM: string(is.CertPEM), ChainPEM: string(is.ChainPEM), NotAfter: is.Certificate.NotAfter}
}

func (c nodeCertificates) IssueNodeCertificate(ctx context.Context, nodeID, csrPEM string) (*node.Certificate, error) {
	is, err := c.ca.IssueNode(ctx, nodeID, []byte(csrPEM))
	if err != nil {
		return nil, err
	}
	return nodeCertificate(is), nil
}

func (c nodeCertificates) RenewNodeCertificate(ctx context.Context, nodeID string, current *x509.Certificate, csrPEM string) (*node.Certificate, error) {
	cur, err := c.ca.VerifyClient(ctx, current)
	if err != nil {
		return nil, err
	}
	if cur.Kind != ca.Node || cur.Owner != nodeID {
		return nil, cove.Errorf(cove.Forbidden, "the certificate presented is not node %s's", nodeID)
	}
	is, err := c.ca.RenewNode(ctx, cur, []byte(csrPEM))
	if err != nil {
		return nil, err
	}
	return nodeCertificate(is), nil
}

func (c nodeCertificates) VerifyNodeCertificate(ctx context.Context, leaf *x509.Certificate) (string, error) {
	cur, err := c.ca.VerifyClient(ctx, leaf)
	if err != nil {
		return "", err
	}
	if cur.Kind != ca.Node {
		return "", cove.Errorf(cove.Unauthenticated, "this call is for compute nodes; the certificate presented is a %s certificate", cur.Kind)
	}
	return cur.Owner, nil
}

// certRevocations cuts off a node when one of its certificates is revoked.
type certRevocations struct{ m *Main }

var _ ca.Revocations = certRevocations{}

func (r certRevocations) CertificateRevoked(ctx context.Context, c *ca.Certificate) {
	if c.Kind != ca.Node || r.m.Nodes == nil {
		return
	}
	if err := r.m.Nodes.CertificateRevoked(ctx, c.Owner, c.Serial); err != nil {
		r.m.Log.Error("a node's certificate was revoked but the node could not be cut off; remove it with `cove node remove --force`",
			"node", c.Owner, "serial", c.Serial, "err", err)
	}
}
