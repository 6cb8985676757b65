package httpapi

import (
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/identity"
)

// RefreshInput asks for new tokens.
type RefreshInput struct {
	RefreshToken string `json:"refresh_token"`
}

// PasswordInput changes the caller's password.
type PasswordInput struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// TokenInput creates a personal access token.
type TokenInput struct {
	Name      string `json:"name"`
	ExpiresIn string `json:"expires_in,omitempty" jsonschema:"description=lifetime as a Go duration such as 720h; default 2160h (90 days)"`
}

// UserUpdate changes an account; platform admins only.
type UserUpdate struct {
	Disabled *bool `json:"disabled,omitempty"`
}

// VersionInfo names the running server's version.
type VersionInfo struct {
	Version string `json:"version"`
	API     string `json:"api"`
}

func (s *Server) addIdentityRoutes() {
	const tag = "identity"
	handle(s, "meta", "GET /api/v1/version", "The server's version",
		func(c *Call, _ Empty) (VersionInfo, error) {
			return VersionInfo{Version: s.version, API: apiVersion}, nil
		}, public())
	handle(s, tag, "POST /api/v1/signup", "Create an account; the first one becomes platform admin",
		func(c *Call, in identity.SignupInput) (*identity.User, error) {
			return s.identity.Signup(c.Ctx(), cove.Principal{}, in)
		}, public(), status(201))
	handle(s, tag, "POST /api/v1/login", "Log in with email and password",
		func(c *Call, in identity.LoginInput) (*identity.Tokens, error) {
			in.Client = c.Client()
			return s.identity.Login(c.Ctx(), in)
		}, public())
	handle(s, tag, "POST /api/v1/refresh", "Exchange a refresh token for new tokens; the old refresh token stops working",
		func(c *Call, in RefreshInput) (*identity.Tokens, error) {
			return s.identity.Refresh(c.Ctx(), in.RefreshToken)
		}, public())
	handle(s, tag, "POST /api/v1/logout", "End the caller's session",
		func(c *Call, _ Empty) (Empty, error) { return Empty{}, s.identity.Logout(c.Ctx(), c.P) })
	handle(s, tag, "GET /api/v1/me", "The caller's account",
		func(c *Call, _ Empty) (*identity.User, error) { return s.identity.FindUserByID(c.Ctx(), c.P.UserID) })
	handle(s, tag, "PUT /api/v1/me/password", "Change the caller's password; ends their other sessions",
		func(c *Call, in PasswordInput) (Empty, error) {
			return Empty{}, s.identity.ChangePassword(c.Ctx(), c.P, in.CurrentPassword, in.NewPassword)
		})

	handle(s, tag, "GET /api/v1/tokens", "The caller's personal access tokens",
		func(c *Call, _ Empty) (List[*identity.Token], error) {
			page, err := c.Page()
			if err != nil {
				return List[*identity.Token]{}, err
			}
			ts, err := s.identity.ListTokens(c.Ctx(), c.P, page)
			return list(ts, page.Limit, func(t *identity.Token) string { return t.ID }), err
		}, paged())
	handle(s, tag, "POST /api/v1/tokens", "Create a personal access token; its secret is shown only in this answer",
		func(c *Call, in TokenInput) (*identity.CreatedToken, error) {
			var ttl time.Duration
			if in.ExpiresIn != "" {
				var err error
				if ttl, err = time.ParseDuration(in.ExpiresIn); err != nil {
					return nil, cove.Errorf(cove.Invalid, "expires_in %q is not a duration such as 720h", in.ExpiresIn).WithDetails(cove.Detail{Field: "expires_in", Message: "not a duration"})
				}
			}
			return s.identity.CreateToken(c.Ctx(), c.P, in.Name, ttl)
		}, status(201))
	handle(s, tag, "DELETE /api/v1/tokens/{id}", "Revoke one of the caller's personal access tokens",
		func(c *Call, _ Empty) (Empty, error) {
			return Empty{}, s.identity.RevokeToken(c.Ctx(), c.P, c.Path("id"))
		})

	handle(s, tag, "GET /api/v1/users", "List accounts (platform admins)",
		func(c *Call, _ Empty) (List[*identity.User], error) {
			page, err := c.Page()
			if err != nil {
				return List[*identity.User]{}, err
			}
			us, err := s.identity.ListUsers(c.Ctx(), c.P, identity.UserFilter{Email: c.Query("email"), Page: page})
			return list(us, page.Limit, func(u *identity.User) string { return u.ID }), err
		}, paged(), query("email", "only the account with this email"))
	handle(s, tag, "POST /api/v1/users", "Create an account (platform admins; works when open signup is off)",
		func(c *Call, in identity.SignupInput) (*identity.User, error) {
			if !c.P.Admin {
				return nil, cove.Errorf(cove.Forbidden, "only platform admins may create accounts; use /api/v1/signup")
			}
			return s.identity.Signup(c.Ctx(), c.P, in)
		}, status(201))
	handle(s, tag, "PATCH /api/v1/users/{id}", "Disable or enable an account (platform admins)",
		func(c *Call, in UserUpdate) (*identity.User, error) {
			if in.Disabled == nil {
				return nil, cove.Errorf(cove.Invalid, "nothing to change: send {\"disabled\": true} or false")
			}
			return s.identity.SetUserDisabled(c.Ctx(), c.P, c.Path("id"), *in.Disabled)
		})

	handle(s, "audit", "GET /api/v1/audit", "Read the audit log, newest first (platform admins; workspace owners and admins with ?workspace=)",
		func(c *Call, _ Empty) (List[audit.Entry], error) {
			page, err := c.Page()
			if err != nil {
				return List[audit.Entry]{}, err
			}
			es, err := s.audit.List(c.Ctx(), c.P, audit.Filter{WorkspaceID: c.Query("workspace"), ActorID: c.Query("actor"), Action: c.Query("action"), Page: page})
			return list(es, page.Limit, func(e audit.Entry) string { return e.ID }), err
		}, paged(), query("workspace", "only this workspace's entries"), query("actor", "only this user's actions"), query("action", "only this action, such as workspace.member.invite"))
}
