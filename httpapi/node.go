package httpapi

import (
	"context"
	"crypto/x509"
	"net/http"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
)

// EnrollTokenInput creates a node enrollment token.
type EnrollTokenInput struct {
	WorkspaceID string `json:"workspace_id,omitempty" jsonschema:"description=the workspace whose node the enrolling node becomes; empty for a platform node (platform admins only)"`
	ExpiresIn   string `json:"expires_in,omitempty" jsonschema:"description=lifetime as a Go duration such as 1h; 1m to 168h; default 1h"`
	AutoApprove bool   `json:"auto_approve,omitempty" jsonschema:"description=approve the node as soon as it enrolls"`
}

// NodeVerifier says which node a client certificate belongs to. The app
// adapts the certificate authority to it.
type NodeVerifier interface {
	// VerifyNodeCertificate returns the ID of the node leaf was issued
	// to. Unauthenticated when leaf is not a valid, unrevoked node
	// certificate of this deployment.
	VerifyNodeCertificate(ctx context.Context, leaf *x509.Certificate) (nodeID string, err error)
}

// verifyNode authenticates a node by the client certificate it presented
// in the TLS handshake. The handshake checked the chain; the verifier
// checks revocation on every request, so that a revocation bites on
// connections that are already open.
func (s *Server) verifyNode(r *http.Request) (string, *x509.Certificate, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", nil, cove.Errorf(cove.Unauthenticated, "this call is for compute nodes: present the node's client certificate over HTTPS (mTLS)")
	}
	if s.nodes == nil {
		return "", nil, cove.Errorf(cove.Unavailable, "this control plane does not authenticate nodes by certificate")
	}
	leaf := r.TLS.PeerCertificates[0]
	id, err := s.nodes.VerifyNodeCertificate(r.Context(), leaf)
	if err != nil {
		return "", nil, err
	}
	return id, leaf, nil
}

// MountNodes adds the node registry's routes: enrollment (public, with a
// one-time token), the nodes' own calls (mTLS with the node's
// certificate), nodes and enrollment tokens.
func (s *Server) MountNodes(svc *node.Service, certs NodeVerifier) {
	const tag = "nodes"
	s.nodes = certs
	handle(s, tag, "POST /api/v1/nodes/enroll", "Enroll a compute node with a one-time enrollment token and its public keys; answers its ID, client certificate and NATS user JWT",
		func(c *Call, in runproto.EnrollRequest) (*runproto.EnrollReply, error) {
			return svc.Enroll(c.Ctx(), in)
		},
		public(), status(201))
	handle(s, tag, "GET /api/v1/nodes/self", "The calling node, authenticated by its client certificate (mTLS)",
		func(c *Call, _ Empty) (*node.Node, error) { return svc.Self(c.Ctx(), c.Node) }, peer())
	handle(s, tag, "POST /api/v1/nodes/self/renew", "Renew the calling node's client certificate and NATS user JWT (mTLS with the current certificate)",
		func(c *Call, in runproto.RenewRequest) (*runproto.NodeCredential, error) {
			return svc.Renew(c.Ctx(), c.Node, c.Cert, in)
		}, peer())
	handle(s, tag, "GET /api/v1/nodes", "The nodes the caller may see: every node for platform admins, their workspaces' nodes for others",
		func(c *Call, _ Empty) (List[*node.Node], error) {
			page, err := c.Page()
			if err != nil {
				return List[*node.Node]{}, err
			}
			out, err := svc.List(c.Ctx(), c.P, node.Filter{WorkspaceID: c.Query("workspace"), State: node.State(c.Query("state")), Page: page})
			return list(out, page.Limit, func(n *node.Node) string { return n.ID }), err
		}, paged(), query("workspace", "only this workspace's nodes"), query("state", "only nodes in this state: pending, active, draining or lost"))
	handle(s, tag, "GET /api/v1/nodes/{id}", "One node, with what the scheduler has reserved on it",
		func(c *Call, _ Empty) (*node.Node, error) { return svc.Get(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "POST /api/v1/nodes/{id}/approve", "Approve an enrolled node, or put a drained node back in service",
		func(c *Call, _ Empty) (*node.Node, error) { return svc.Approve(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "POST /api/v1/nodes/{id}/drain", "Place no new runs on a node; the runs it has finish",
		func(c *Call, _ Empty) (*node.Node, error) { return svc.Drain(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "DELETE /api/v1/nodes/{id}", "Remove a node; refused while it has active runs unless force=true, which fails them (node_lost)",
		func(c *Call, _ Empty) (Empty, error) {
			force := false
			switch c.Query("force") {
			case "", "false":
			case "true":
				force = true
			default:
				return Empty{}, cove.Errorf(cove.Invalid, "force must be true or false").WithDetails(cove.Detail{Field: "force", Message: "not a boolean"})
			}
			return Empty{}, svc.Remove(c.Ctx(), c.P, c.Path("id"), force)
		}, query("force", "true to remove a node that has active runs, failing them"))

	handle(s, tag, "POST /api/v1/nodes/enroll-tokens", "Create a one-time node enrollment token; the secret is shown only in this answer",
		func(c *Call, in EnrollTokenInput) (*node.CreatedEnrollToken, error) {
			var ttl time.Duration
			if in.ExpiresIn != "" {
				var err error
				if ttl, err = time.ParseDuration(in.ExpiresIn); err != nil || ttl <= 0 {
					return nil, cove.Errorf(cove.Invalid, "expires_in %q is not a duration such as 1h", in.ExpiresIn).WithDetails(cove.Detail{Field: "expires_in", Message: "not a duration"})
				}
			}
			return svc.CreateEnrollToken(c.Ctx(), c.P, in.WorkspaceID, ttl, in.AutoApprove)
		}, status(201))
	handle(s, tag, "GET /api/v1/nodes/enroll-tokens", "The enrollment tokens of a workspace, or of the platform without ?workspace=",
		func(c *Call, _ Empty) (List[*node.EnrollToken], error) {
			page, err := c.Page()
			if err != nil {
				return List[*node.EnrollToken]{}, err
			}
			out, err := svc.ListEnrollTokens(c.Ctx(), c.P, c.Query("workspace"), page)
			return list(out, page.Limit, func(t *node.EnrollToken) string { return t.ID }), err
		}, paged(), query("workspace", "the workspace whose tokens to list; empty for the platform's"))
	handle(s, tag, "DELETE /api/v1/nodes/enroll-tokens/{id}", "Revoke an unused enrollment token",
		func(c *Call, _ Empty) (Empty, error) {
			return Empty{}, svc.RevokeEnrollToken(c.Ctx(), c.P, c.Path("id"))
		})
}
