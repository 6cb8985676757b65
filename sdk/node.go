package sdk

import (
	"context"
	"net/http"
	"net/url"

	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
)

// EnrollNode enrolls a compute node with a one-time enrollment token; it
// needs no login. The answer holds the node's ID and its NATS credential.
// A token that is unknown, used, revoked or expired is Unauthenticated;
// what the node declares is checked (Invalid).
func (c *Client) EnrollNode(ctx context.Context, r runproto.EnrollRequest) (*runproto.EnrollReply, error) {
	var out runproto.EnrollReply
	if err := c.callPublic(ctx, http.MethodPost, path("nodes", "enroll"), r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// NodeFilter narrows ListNodes.
type NodeFilter struct {
	WorkspaceID string     // only this workspace's nodes
	State       node.State // only nodes in this state
}

// ListNodes returns a page of the nodes the caller may see (every node
// for platform admins, their workspaces' nodes for others) and the next
// cursor.
func (c *Client) ListNodes(ctx context.Context, f NodeFilter, opts ListOptions) ([]*node.Node, string, error) {
	q := opts.query()
	if f.WorkspaceID != "" {
		q.Set("workspace", f.WorkspaceID)
	}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	return page[*node.Node](ctx, c, path("nodes"), q)
}

// GetNode returns one node; one the caller may not see is NotFound.
func (c *Client) GetNode(ctx context.Context, id string) (*node.Node, error) {
	return one[node.Node](ctx, c, http.MethodGet, path("nodes", id), nil)
}

// ApproveNode approves an enrolled node, or puts a drained node back in
// service; Forbidden for those who may see but not manage it.
func (c *Client) ApproveNode(ctx context.Context, id string) (*node.Node, error) {
	return one[node.Node](ctx, c, http.MethodPost, path("nodes", id, "approve"), nil)
}

// DrainNode stops placing new runs on a node; the runs it has finish.
func (c *Client) DrainNode(ctx context.Context, id string) (*node.Node, error) {
	return one[node.Node](ctx, c, http.MethodPost, path("nodes", id, "drain"), nil)
}

// RemoveNode removes a node. While it has active runs it is Conflict
// unless force, which fails them with node_lost.
func (c *Client) RemoveNode(ctx context.Context, id string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.call(ctx, http.MethodDelete, path("nodes", id), q, nil, nil)
}

// CreateEnrollToken creates a one-time enrollment token. Its Token is
// shown only here; the node operator passes it to `cove node run`.
func (c *Client) CreateEnrollToken(ctx context.Context, in httpapi.EnrollTokenInput) (*node.CreatedEnrollToken, error) {
	return one[node.CreatedEnrollToken](ctx, c, http.MethodPost, path("nodes", "enroll-tokens"), in)
}

// ListEnrollTokens returns a page of the enrollment tokens of a workspace,
// or of the platform when workspaceID is empty, and the next cursor.
func (c *Client) ListEnrollTokens(ctx context.Context, workspaceID string, opts ListOptions) ([]*node.EnrollToken, string, error) {
	q := opts.query()
	if workspaceID != "" {
		q.Set("workspace", workspaceID)
	}
	return page[*node.EnrollToken](ctx, c, path("nodes", "enroll-tokens"), q)
}

// RevokeEnrollToken revokes an unused enrollment token; a used one is
// Conflict.
func (c *Client) RevokeEnrollToken(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, path("nodes", "enroll-tokens", id), nil, nil, nil)
}
