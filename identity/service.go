package identity

import (
	"context"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
)

// Config holds the identity settings.
type Config struct {
	AccessTTL   time.Duration // lifetime of an access token
	RefreshTTL  time.Duration // idle lifetime of a session: each refresh extends it
	MaxTokenTTL time.Duration // longest lifetime of a personal access token
	OpenSignup  bool          // anyone may sign up; when false only the first user and admins create accounts
	Argon2      Argon2Params
	SigningKey  []byte // HMAC key of access tokens; shared by every replica

	LoginBurstPerEmail  int           // login attempts allowed at once per email
	LoginBurstPerClient int           // and per client address
	LoginRefill         time.Duration // one more attempt per key after each period
}

// Relations writes authorization tuples; satisfied by *authz.Authorizer.
type Relations interface {
	Write(ctx context.Context, writes, deletes []authz.Tuple) error
}

// Service is the identity service.
type Service struct {
	store    Store
	rel      Relations
	cfg      Config
	now      func() time.Time
	byEmail  *Limiter
	byClient *Limiter
}

// NewService returns a service over store. now is the clock; nil means
// time.Now.
func NewService(store Store, rel Relations, cfg Config, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{
		store:    store,
		rel:      rel,
		cfg:      cfg,
		now:      func() time.Time { return now().UTC().Truncate(time.Microsecond) },
		byEmail:  NewLimiter(cfg.LoginBurstPerEmail, cfg.LoginRefill),
		byClient: NewLimiter(cfg.LoginBurstPerClient, cfg.LoginRefill),
	}
}

// SignupInput is a request for an account.
type SignupInput struct {
	Email    string `json:"email"`
	Name     string `json:"name"`
	Password string `json:"password"`
}

// Tokens is what a login or a refresh returns.
type Tokens struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	TokenType    string    `json:"token_type"`
	ExpiresAt    time.Time `json:"expires_at"`
	User         *User     `json:"user"`
}

// Signup creates an account. The first account becomes platform admin. When
// open signup is off, only the first account and accounts created by a
// platform admin (caller.Admin) are allowed.
func (s *Service) Signup(ctx context.Context, caller cove.Principal, in SignupInput) (*User, error) {
	in.Email = NormalizeEmail(in.Email)
	if err := ValidateEmail(in.Email); err != nil {
		return nil, err
	}
	if err := ValidateName("name", in.Name, MaxNameLen); err != nil {
		return nil, err
	}
	if err := ValidatePassword(in.Password); err != nil {
		return nil, err
	}
	hash, err := HashPassword(in.Password, s.cfg.Argon2)
	if err != nil {
		return nil, cove.Wrap(err, "could not hash the password")
	}
	now := s.now()
	u := &User{ID: cove.NewID("usr"), Email: in.Email, Name: in.Name, PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if !s.cfg.OpenSignup && !caller.Admin {
			// Only the claim of the first admin may pass: CreateUser makes it
			// atomically, and we refuse below if someone else already had it.
			if err := tx.CreateUser(ctx, u, true); err != nil {
				return err
			}
			if !u.Admin {
				return cove.Errorf(cove.Forbidden, "signup is closed on this server; ask a platform admin to create your account")
			}
		} else if err := tx.CreateUser(ctx, u, caller.UserID == ""); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: firstNonEmpty(caller.UserID, u.ID), Action: "user.signup", Target: u.ID, Outcome: audit.Success})
	})
	if err != nil {
		return nil, err
	}
	if u.Admin {
		if err := s.rel.Write(ctx, []authz.Tuple{{Subject: authz.User(u.ID), Relation: authz.Admin, Object: authz.Platform}}, nil); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// LoginInput is a password login. Client identifies the caller's address
// for rate limiting.
type LoginInput struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Client   string `json:"-"`
}

// Login checks a password and opens a session. Wrong email and wrong
// password get the same answer in about the same time.
func (s *Service) Login(ctx context.Context, in LoginInput) (*Tokens, error) {
	email := NormalizeEmail(in.Email)
	now := s.now()
	if !s.byClient.Allow(in.Client, now) || !s.byEmail.Allow(email, now) {
		s.recordFailure(ctx, audit.Entry{Action: "user.login", Target: email, Outcome: audit.Denied, Detail: "rate limited"})
		return nil, cove.Errorf(cove.RateLimited, "too many login attempts; wait a minute and try again")
	}
	wrong := cove.Errorf(cove.Unauthenticated, "the email or password is wrong")
	if len(in.Password) > MaxPasswordLen {
		return nil, wrong
	}
	u, err := s.store.FindUserByEmail(ctx, email)
	if cove.ErrorCode(err) == cove.NotFound {
		CheckPassword(in.Password, dummyHash, s.cfg.Argon2)
		s.recordFailure(ctx, audit.Entry{Action: "user.login", Target: email, Outcome: audit.Failure, Detail: "unknown email"})
		return nil, wrong
	} else if err != nil {
		return nil, err
	}
	ok, stale := CheckPassword(in.Password, u.PasswordHash, s.cfg.Argon2)
	if !ok {
		s.recordFailure(ctx, audit.Entry{Action: "user.login", Target: u.ID, Outcome: audit.Failure, Detail: "wrong password"})
		return nil, wrong
	}
	if u.Disabled {
		return nil, cove.Errorf(cove.Unauthenticated, "this account is disabled; ask a platform admin")
	}
	var tokens *Tokens
	err = s.store.Atomic(ctx, func(tx Store) error {
		if stale {
			if h, err := HashPassword(in.Password, s.cfg.Argon2); err == nil {
				u.PasswordHash, u.UpdatedAt = h, now
				if err := tx.UpdateUser(ctx, u); err != nil {
					return err
				}
			}
		}
		var err error
		if tokens, err = s.openSession(ctx, tx, u, now); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: u.ID, Action: "user.login", Target: u.ID, Outcome: audit.Success})
	})
	return tokens, err
}

func (s *Service) openSession(ctx context.Context, tx Store, u *User, now time.Time) (*Tokens, error) {
	refresh := newSecret(refreshPrefix)
	sess := &Session{ID: cove.NewID("ses"), UserID: u.ID, RefreshHash: digest(refresh), RefreshExpiresAt: now.Add(s.cfg.RefreshTTL), CreatedAt: now}
	if err := tx.CreateSession(ctx, sess); err != nil {
		return nil, err
	}
	access, err := signAccess(s.cfg.SigningKey, u.ID, sess.ID, now, s.cfg.AccessTTL)
	if err != nil {
		return nil, cove.Wrap(err, "could not sign the access token")
	}
	return &Tokens{AccessToken: access, RefreshToken: refresh, TokenType: "Bearer", ExpiresAt: now.Add(s.cfg.AccessTTL), User: u}, nil
}

// Refresh exchanges a refresh token for a new access token and a new
// refresh token. The old refresh token stops working; presenting it again
// revokes the whole session, since only a thief would.
func (s *Service) Refresh(ctx context.Context, refresh string) (*Tokens, error) {
	invalid := cove.Errorf(cove.Unauthenticated, "the refresh token is not valid; log in again")
	if len(refresh) > 100 || len(refresh) < len(refreshPrefix) || refresh[:len(refreshPrefix)] != refreshPrefix {
		return nil, invalid
	}
	hash := digest(refresh)
	now := s.now()
	sess, err := s.store.FindSessionByRefresh(ctx, hash)
	if cove.ErrorCode(err) == cove.NotFound {
		return nil, invalid
	} else if err != nil {
		return nil, err
	}
	if sess.RevokedAt != nil || !now.Before(sess.RefreshExpiresAt) {
		return nil, cove.Errorf(cove.Unauthenticated, "the session has ended; log in again")
	}
	if hash == sess.PrevRefreshHash {
		_ = s.store.RevokeSession(ctx, sess.ID, now)
		s.recordFailure(ctx, audit.Entry{ActorID: sess.UserID, Action: "session.refresh", Target: sess.ID, Outcome: audit.Denied, Detail: "refresh token replayed; session revoked"})
		return nil, cove.Errorf(cove.Unauthenticated, "this refresh token was already used, so the session was ended to be safe; log in again")
	}
	u, err := s.activeUser(ctx, sess.UserID)
	if err != nil {
		return nil, err
	}
	next := newSecret(refreshPrefix)
	ok, err := s.store.RotateSession(ctx, sess.ID, hash, digest(next), now.Add(s.cfg.RefreshTTL))
	if err != nil {
		return nil, err
	}
	if !ok { // a concurrent refresh with the same token won
		return nil, invalid
	}
	access, err := signAccess(s.cfg.SigningKey, u.ID, sess.ID, now, s.cfg.AccessTTL)
	if err != nil {
		return nil, cove.Wrap(err, "could not sign the access token")
	}
	return &Tokens{AccessToken: access, RefreshToken: next, TokenType: "Bearer", ExpiresAt: now.Add(s.cfg.AccessTTL), User: u}, nil
}

// Authenticate resolves a bearer credential, an access token or a personal
// access token, to a principal.
func (s *Service) Authenticate(ctx context.Context, bearer string) (cove.Principal, error) {
	now := s.now()
	switch {
	case bearer == "":
		return cove.Principal{}, cove.Errorf(cove.Unauthenticated, "sign in first: send an access token or a personal access token as 'Authorization: Bearer ...'")
	case looksLikeJWT(bearer):
		c, err := parseAccess(s.cfg.SigningKey, bearer, now)
		if err != nil {
			return cove.Principal{}, err
		}
		sess, err := s.store.FindSessionByID(ctx, c.SessionID)
		if err != nil || sess.RevokedAt != nil || sess.UserID != c.Subject {
			return cove.Principal{}, cove.Errorf(cove.Unauthenticated, "the session has ended; log in again")
		}
		u, err := s.activeUser(ctx, c.Subject)
		if err != nil {
			return cove.Principal{}, err
		}
		return cove.Principal{UserID: u.ID, Email: u.Email, Admin: u.Admin, SessionID: sess.ID}, nil
	case len(bearer) > len(patPrefix) && bearer[:len(patPrefix)] == patPrefix && len(bearer) < 100:
		t, err := s.store.FindTokenByHash(ctx, digest(bearer))
		if err != nil {
			return cove.Principal{}, cove.Errorf(cove.Unauthenticated, "the personal access token is not valid")
		}
		if t.RevokedAt != nil {
			return cove.Principal{}, cove.Errorf(cove.Unauthenticated, "the personal access token %q was revoked; create a new one", t.Name)
		}
		if !now.Before(t.ExpiresAt) {
			return cove.Principal{}, cove.Errorf(cove.Unauthenticated, "the personal access token %q has expired; create a new one", t.Name)
		}
		u, err := s.activeUser(ctx, t.UserID)
		if err != nil {
			return cove.Principal{}, err
		}
		// Record use at minute granularity, not one write per request.
		if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) > time.Minute {
			t.LastUsedAt = &now
			_ = s.store.UpdateToken(ctx, t)
		}
		return cove.Principal{UserID: u.ID, Email: u.Email, Admin: u.Admin, TokenID: t.ID}, nil
	default:
		return cove.Principal{}, cove.Errorf(cove.Unauthenticated, "the credential is not a Cove token; log in again")
	}
}

func (s *Service) activeUser(ctx context.Context, id string) (*User, error) {
	u, err := s.store.FindUserByID(ctx, id)
	if cove.ErrorCode(err) == cove.NotFound {
		return nil, cove.Errorf(cove.Unauthenticated, "the account no longer exists")
	} else if err != nil {
		return nil, err
	}
	if u.Disabled {
		return nil, cove.Errorf(cove.Unauthenticated, "this account is disabled; ask a platform admin")
	}
	return u, nil
}

// Logout ends the caller's session.
func (s *Service) Logout(ctx context.Context, p cove.Principal) error {
	if p.SessionID == "" {
		return cove.Errorf(cove.Invalid, "a personal access token has no session to end; revoke the token instead")
	}
	now := s.now()
	return s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.RevokeSession(ctx, p.SessionID, now); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: p.UserID, Action: "user.logout", Target: p.SessionID, Outcome: audit.Success})
	})
}

// ChangePassword replaces the caller's password and ends every other
// session of theirs.
func (s *Service) ChangePassword(ctx context.Context, p cove.Principal, current, next string) error {
	u, err := s.activeUser(ctx, p.UserID)
	if err != nil {
		return err
	}
	if ok, _ := CheckPassword(current, u.PasswordHash, s.cfg.Argon2); !ok {
		return cove.Errorf(cove.Forbidden, "the current password is wrong").WithDetails(cove.Detail{Field: "current_password", Message: "wrong"})
	}
	if err := ValidatePassword(next); err != nil {
		return err
	}
	hash, err := HashPassword(next, s.cfg.Argon2)
	if err != nil {
		return cove.Wrap(err, "could not hash the password")
	}
	now := s.now()
	return s.store.Atomic(ctx, func(tx Store) error {
		u.PasswordHash, u.UpdatedAt = hash, now
		if err := tx.UpdateUser(ctx, u); err != nil {
			return err
		}
		if err := tx.RevokeSessions(ctx, u.ID, p.SessionID, now); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: u.ID, Action: "user.password.change", Target: u.ID, Outcome: audit.Success})
	})
}

// FindUserByID returns a user; anyone signed in may look up a user by ID,
// which shows only name and email.
func (s *Service) FindUserByID(ctx context.Context, id string) (*User, error) {
	return s.store.FindUserByID(ctx, id)
}

// FindUserByEmail returns the user with the (normalized) email.
func (s *Service) FindUserByEmail(ctx context.Context, email string) (*User, error) {
	return s.store.FindUserByEmail(ctx, NormalizeEmail(email))
}

// ListUsers lists accounts; platform admins only.
func (s *Service) ListUsers(ctx context.Context, p cove.Principal, f UserFilter) ([]*User, error) {
	if !p.Admin {
		return nil, cove.Errorf(cove.Forbidden, "only platform admins may list users")
	}
	f.Email = NormalizeEmail(f.Email)
	f.Page = f.Page.Normalize()
	return s.store.FindUsers(ctx, f)
}

// SetUserDisabled disables or re-enables an account; platform admins only.
// Disabling ends the user's sessions at once; their personal access tokens
// stop working while the account is disabled.
func (s *Service) SetUserDisabled(ctx context.Context, p cove.Principal, id string, disabled bool) (*User, error) {
	if !p.Admin {
		return nil, cove.Errorf(cove.Forbidden, "only platform admins may disable users")
	}
	if id == p.UserID && disabled {
		return nil, cove.Errorf(cove.Conflict, "you cannot disable your own account")
	}
	now := s.now()
	var u *User
	err := s.store.Atomic(ctx, func(tx Store) error {
		var err error
		if u, err = tx.FindUserByID(ctx, id); err != nil {
			return err
		}
		u.Disabled, u.UpdatedAt = disabled, now
		if err := tx.UpdateUser(ctx, u); err != nil {
			return err
		}
		if disabled {
			if err := tx.RevokeSessions(ctx, u.ID, "", now); err != nil {
				return err
			}
		}
		action := "user.enable"
		if disabled {
			action = "user.disable"
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: p.UserID, Action: action, Target: u.ID, Outcome: audit.Success})
	})
	return u, err
}

// CreatedToken is a new personal access token with its secret, which is
// shown this once and never again.
type CreatedToken struct {
	Token
	Secret string `json:"secret"`
}

// DefaultTokenTTL is the lifetime of a personal access token when none is
// asked for.
const DefaultTokenTTL = 90 * 24 * time.Hour

// CreateToken creates a personal access token for the caller.
func (s *Service) CreateToken(ctx context.Context, p cove.Principal, name string, ttl time.Duration) (*CreatedToken, error) {
	if err := ValidateName("name", name, MaxNameLen); err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = min(DefaultTokenTTL, s.cfg.MaxTokenTTL)
	}
	if ttl < time.Minute || ttl > s.cfg.MaxTokenTTL {
		return nil, cove.Errorf(cove.Invalid, "a token lives between one minute and %s", s.cfg.MaxTokenTTL).WithDetails(cove.Detail{Field: "expires_in", Message: "out of range"})
	}
	now := s.now()
	secret := newSecret(patPrefix)
	t := &CreatedToken{Secret: secret, Token: Token{
		ID: cove.NewID("tok"), UserID: p.UserID, Name: name, Prefix: secret[:len(patPrefix)+6],
		Hash: digest(secret), ExpiresAt: now.Add(ttl), CreatedAt: now,
	}}
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.CreateToken(ctx, &t.Token); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: p.UserID, Action: "token.create", Target: t.ID, Outcome: audit.Success})
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// ListTokens lists the caller's personal access tokens, without secrets.
func (s *Service) ListTokens(ctx context.Context, p cove.Principal, page cove.Page) ([]*Token, error) {
	return s.store.FindTokens(ctx, p.UserID, page.Normalize())
}

// RevokeToken revokes one of the caller's personal access tokens. Another
// user's token is not_found.
func (s *Service) RevokeToken(ctx context.Context, p cove.Principal, id string) error {
	now := s.now()
	return s.store.Atomic(ctx, func(tx Store) error {
		t, err := tx.FindTokenByID(ctx, id)
		if err != nil || t.UserID != p.UserID {
			return cove.Errorf(cove.NotFound, "token %s not found", id)
		}
		if t.RevokedAt == nil {
			t.RevokedAt = &now
			if err := tx.UpdateToken(ctx, t); err != nil {
				return err
			}
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: p.UserID, Action: "token.revoke", Target: t.ID, Outcome: audit.Success})
	})
}

// SyncRelations grants platform admin to every admin in the store. The
// store is the source of truth; this repairs a grant that failed after its
// commit, and runs at every start.
func (s *Service) SyncRelations(ctx context.Context) error {
	admins, err := s.store.FindAdmins(ctx)
	if err != nil {
		return err
	}
	var ts []authz.Tuple
	for _, id := range admins {
		ts = append(ts, authz.Tuple{Subject: authz.User(id), Relation: authz.Admin, Object: authz.Platform})
	}
	return s.rel.Write(ctx, ts, nil)
}

// recordFailure audits an action that did not happen. It is best effort:
// a failure to record must not turn a clean refusal into an internal error.
func (s *Service) recordFailure(ctx context.Context, e audit.Entry) {
	e.ID, e.Time = cove.NewID("aud"), s.now()
	_ = s.store.RecordAudit(ctx, e)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
