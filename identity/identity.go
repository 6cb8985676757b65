// Package identity holds users, password login, sessions with short-lived
// access tokens and rotating refresh tokens, and personal access tokens.
//
// Secrets are never stored: passwords as argon2id hashes, refresh and
// personal tokens as SHA-256 digests (they are 256-bit random, so a fast
// hash is enough), and access tokens are not stored at all but signed.
package identity

import (
	"context"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
)

// User is a person with a login.
type User struct {
	ID           string    `json:"id"`
	Email        string    `json:"email"`
	Name         string    `json:"name"`
	Admin        bool      `json:"admin"`
	Disabled     bool      `json:"disabled"`
	PasswordHash string    `json:"-"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Session is one login. Its refresh token rotates on every use; the digest
// of the previous one is kept so that a replayed refresh token, the sign of
// a stolen one, revokes the whole session.
type Session struct {
	ID               string
	UserID           string
	RefreshHash      string
	PrevRefreshHash  string
	RefreshExpiresAt time.Time
	CreatedAt        time.Time
	RevokedAt        *time.Time
}

// Token is a personal access token. Its secret is shown once, at creation.
type Token struct {
	ID         string     `json:"id"`
	UserID     string     `json:"user_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"` // the first characters of the secret, to tell tokens apart
	Hash       string     `json:"-"`
	ExpiresAt  time.Time  `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
}

// Limits on user input.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 256 // argon2 hashes any length; this bounds the work an attacker can ask for
	MaxNameLen     = 100
	MaxEmailLen    = 254
)

// NormalizeEmail lower-cases and trims an address so that two spellings
// differing only in case are one account.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// ValidateEmail checks the shape of an already normalized address.
func ValidateEmail(email string) error {
	if email == "" {
		return cove.Errorf(cove.Invalid, "email is required").WithDetails(cove.Detail{Field: "email", Message: "required"})
	}
	if len(email) > MaxEmailLen {
		return cove.Errorf(cove.Invalid, "email is longer than %d characters", MaxEmailLen).WithDetails(cove.Detail{Field: "email", Message: "too long"})
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || a.Name != "" {
		return cove.Errorf(cove.Invalid, "email %q is not an address like name@example.com", email).WithDetails(cove.Detail{Field: "email", Message: "not an email address"})
	}
	return nil
}

// ValidateName checks a display name or any other user-chosen name: not
// blank, at most max characters, no control characters.
func ValidateName(field, name string, max int) error {
	if strings.TrimSpace(name) == "" {
		return cove.Errorf(cove.Invalid, "%s is required", field).WithDetails(cove.Detail{Field: field, Message: "required"})
	}
	if utf8.RuneCountInString(name) > max {
		return cove.Errorf(cove.Invalid, "%s is longer than %d characters", field, max).WithDetails(cove.Detail{Field: field, Message: "too long"})
	}
	if !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return cove.Errorf(cove.Invalid, "%s contains control characters", field).WithDetails(cove.Detail{Field: field, Message: "control characters"})
	}
	return nil
}

// ValidatePassword enforces the password rules.
func ValidatePassword(pw string) error {
	n := utf8.RuneCountInString(pw)
	if n < MinPasswordLen {
		return cove.Errorf(cove.Invalid, "password must be at least %d characters", MinPasswordLen).WithDetails(cove.Detail{Field: "password", Message: "too short"})
	}
	if len(pw) > MaxPasswordLen {
		return cove.Errorf(cove.Invalid, "password must be at most %d bytes", MaxPasswordLen).WithDetails(cove.Detail{Field: "password", Message: "too long"})
	}
	return nil
}

// UserFilter selects users for admin listing.
type UserFilter struct {
	Email string
	Page  cove.Page
}

// Store persists users, sessions and tokens. Methods return not_found for
// a missing row and conflict for a duplicate email.
type Store interface {
	// Atomic runs fn in one transaction; fn's Store sees the transaction.
	Atomic(ctx context.Context, fn func(Store) error) error

	// CreateUser inserts u; conflict when the email is taken. When
	// firstAdmin is true and no user has ever claimed platform admin, u
	// becomes admin: exactly one concurrent signup can win that claim.
	CreateUser(ctx context.Context, u *User, firstAdmin bool) error
	FindUserByID(ctx context.Context, id string) (*User, error)
	FindUserByEmail(ctx context.Context, email string) (*User, error)
	FindUsers(ctx context.Context, f UserFilter) ([]*User, error)
	UpdateUser(ctx context.Context, u *User) error

	CreateSession(ctx context.Context, s *Session) error
	FindSessionByID(ctx context.Context, id string) (*Session, error)
	// FindSessionByRefresh finds the session whose current or previous
	// refresh digest is hash.
	FindSessionByRefresh(ctx context.Context, hash string) (*Session, error)
	// RotateSession replaces the refresh digest old with next, keeping old
	// as the previous one, only if old is still current and the session is
	// open; it reports whether it did, so two concurrent refreshes with one
	// token cannot both succeed.
	RotateSession(ctx context.Context, id, old, next string, expires time.Time) (bool, error)
	RevokeSession(ctx context.Context, id string, at time.Time) error
	// RevokeSessions revokes every open session of a user except keep.
	RevokeSessions(ctx context.Context, userID, keep string, at time.Time) error
	// FindAdmins returns the IDs of every platform admin.
	FindAdmins(ctx context.Context) ([]string, error)

	CreateToken(ctx context.Context, t *Token) error
	FindTokenByHash(ctx context.Context, hash string) (*Token, error)
	FindTokenByID(ctx context.Context, id string) (*Token, error)
	FindTokens(ctx context.Context, userID string, page cove.Page) ([]*Token, error)
	UpdateToken(ctx context.Context, t *Token) error

	RecordAudit(ctx context.Context, e audit.Entry) error
}
