package cove

import (
	"encoding/base32"
	"strings"

	"github.com/google/uuid"
)

// idEncoding is base32 with the "extended hex" alphabet, which sorts in the
// same order as the bytes it encodes, so IDs made later sort later.
var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// NewID returns a new identifier such as "ws_06bq0v1t8l6bpcbk3mf9rbsflc":
// a prefix naming the kind of thing, then a UUIDv7 in lowercase base32hex.
// IDs are time ordered, so lists ordered by ID are in creation order, and
// they contain only [a-z0-9_], so they are safe in NATS subjects, paths and
// file names.
func NewID(prefix string) string {
	u := uuid.Must(uuid.NewV7())
	return prefix + "_" + strings.ToLower(idEncoding.EncodeToString(u[:]))
}

// ValidID reports whether id has the shape NewID makes for prefix. Handlers
// and subscribers use it to reject hostile IDs before they reach a store,
// a path or a NATS subject.
func ValidID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"_")
	if !ok || len(rest) != 26 {
		return false
	}
	for _, c := range rest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}
