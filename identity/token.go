package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/covecompute/cove"
)

// Token prefixes make a leaked secret recognizable by secret scanners and
// let Authenticate tell the kinds apart without trying each.
const (
	refreshPrefix = "cvr_"
	patPrefix     = "cvp_"
)

// accessClaims are the claims of an access token.
type accessClaims struct {
	SessionID string `json:"sid"`
	jwt.RegisteredClaims
}

const tokenIssuer = "cove"

// newSecret returns prefix followed by 256 random bits.
func newSecret(prefix string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// digest is how refresh and personal tokens are stored.
func digest(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// signAccess returns an HS256 JWT for the session.
func signAccess(key []byte, userID, sessionID string, now time.Time, ttl time.Duration) (string, error) {
	c := accessClaims{
		SessionID: sessionID,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   userID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
}

// parseAccess verifies an access token's signature, algorithm, issuer and
// expiry and returns its claims.
func parseAccess(key []byte, token string, now time.Time) (*accessClaims, error) {
	var c accessClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	switch {
	case err == nil:
		return &c, nil
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, cove.Errorf(cove.Unauthenticated, "the access token has expired; refresh it or log in again")
	default:
		return nil, cove.Errorf(cove.Unauthenticated, "the access token is not valid; log in again")
	}
}

// looksLikeJWT tells access tokens from opaque ones.
func looksLikeJWT(s string) bool { return strings.Count(s, ".") == 2 }
