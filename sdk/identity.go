package sdk

import (
	"context"
	"net/http"
	"net/url"

	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
)

// Signup creates an account; the first one on a server becomes platform
// admin. It returns Conflict when the email is taken, Invalid for a bad
// email, name or password, and Forbidden when signup is closed.
func (c *Client) Signup(ctx context.Context, in identity.SignupInput) (*identity.User, error) {
	var u identity.User
	if err := c.callPublic(ctx, http.MethodPost, path("signup"), in, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Login opens a session with email and password, and the client uses its
// tokens from then on. A wrong email or password is Unauthenticated; too
// many attempts are RateLimited.
func (c *Client) Login(ctx context.Context, in identity.LoginInput) (*identity.Tokens, error) {
	var t identity.Tokens
	if err := c.callPublic(ctx, http.MethodPost, path("login"), in, &t); err != nil {
		return nil, err
	}
	c.setSession(&t)
	return &t, nil
}

// Refresh exchanges a refresh token for new tokens, which the client uses
// from then on; the old refresh token stops working. It does not call the
// WithRefresh callback: the caller has the tokens. A used, expired or
// unknown refresh token is Unauthenticated.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*identity.Tokens, error) {
	var t identity.Tokens
	if err := c.callPublic(ctx, http.MethodPost, path("refresh"), httpapi.RefreshInput{RefreshToken: refreshToken}, &t); err != nil {
		return nil, err
	}
	c.setSession(&t)
	return &t, nil
}

// Logout ends the caller's session and forgets the client's tokens. A
// personal access token has no session: that is Invalid.
func (c *Client) Logout(ctx context.Context) error {
	if err := c.call(ctx, http.MethodPost, path("logout"), nil, nil, nil); err != nil {
		return err
	}
	c.setSession(&identity.Tokens{})
	return nil
}

// Me returns the caller's account.
func (c *Client) Me(ctx context.Context) (*identity.User, error) {
	return one[identity.User](ctx, c, http.MethodGet, path("me"), nil)
}

// ChangePassword replaces the caller's password and ends their other
// sessions. A wrong current password is Forbidden; a weak new one Invalid.
func (c *Client) ChangePassword(ctx context.Context, current, next string) error {
	return c.call(ctx, http.MethodPut, path("me", "password"), nil, httpapi.PasswordInput{CurrentPassword: current, NewPassword: next}, nil)
}

// CreateToken creates a personal access token for the caller. Its Secret
// is in this answer only.
func (c *Client) CreateToken(ctx context.Context, in httpapi.TokenInput) (*identity.CreatedToken, error) {
	return one[identity.CreatedToken](ctx, c, http.MethodPost, path("tokens"), in)
}

// ListTokens returns a page of the caller's personal access tokens and the
// cursor of the next page, "" on the last.
func (c *Client) ListTokens(ctx context.Context, opts ListOptions) ([]*identity.Token, string, error) {
	return page[*identity.Token](ctx, c, path("tokens"), opts.query())
}

// RevokeToken revokes one of the caller's personal access tokens; another
// user's token is NotFound.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, path("tokens", id), nil, nil, nil)
}

// UserFilter selects accounts for ListUsers.
type UserFilter struct {
	Email string // only the account with this email
	ListOptions
}

// ListUsers returns a page of accounts and the next cursor; platform admins
// only, anyone else is Forbidden.
func (c *Client) ListUsers(ctx context.Context, f UserFilter) ([]*identity.User, string, error) {
	q := f.query()
	setIf(q, "email", f.Email)
	return page[*identity.User](ctx, c, path("users"), q)
}

// CreateUser creates an account on behalf of a platform admin, also when
// open signup is off. Non-admins are Forbidden; a taken email is Conflict.
func (c *Client) CreateUser(ctx context.Context, in identity.SignupInput) (*identity.User, error) {
	return one[identity.User](ctx, c, http.MethodPost, path("users"), in)
}

// SetUserDisabled disables or re-enables an account; platform admins only.
// Disabling ends the account's sessions; disabling oneself is Conflict.
func (c *Client) SetUserDisabled(ctx context.Context, id string, disabled bool) (*identity.User, error) {
	return one[identity.User](ctx, c, http.MethodPatch, path("users", id), httpapi.UserUpdate{Disabled: &disabled})
}

// AuditFilter selects audit entries for ListAudit. Empty fields match all.
type AuditFilter struct {
	WorkspaceID string
	ActorID     string
	Action      string // such as "workspace.member.invite"
	ListOptions
}

// ListAudit returns a page of audit entries, newest first, and the next
// cursor. Platform admins read everything; workspace owners and admins
// must name their workspace, and anyone else is Forbidden or NotFound.
func (c *Client) ListAudit(ctx context.Context, f AuditFilter) ([]audit.Entry, string, error) {
	q := f.query()
	setIf(q, "workspace", f.WorkspaceID)
	setIf(q, "actor", f.ActorID)
	setIf(q, "action", f.Action)
	return page[audit.Entry](ctx, c, path("audit"), q)
}

func setIf(q url.Values, key, value string) {
	if value != "" {
		q.Set(key, value)
	}
}
