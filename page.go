package cove

import (
	"encoding/base64"
)

// Page limits.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 500
)

// Page asks for one page of a list ordered by ID. After is the cursor from
// the previous page, empty for the first.
type Page struct {
	After string
	Limit int
}

// Normalize clamps the limit into [1, MaxPageLimit], defaulting to
// DefaultPageLimit.
func (p Page) Normalize() Page {
	if p.Limit <= 0 {
		p.Limit = DefaultPageLimit
	}
	if p.Limit > MaxPageLimit {
		p.Limit = MaxPageLimit
	}
	return p
}

// EncodeCursor turns the last ID of a page into an opaque cursor.
func EncodeCursor(lastID string) string {
	if lastID == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(lastID))
}

// DecodeCursor reverses EncodeCursor. A cursor that was not made by
// EncodeCursor is invalid.
func DecodeCursor(cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(b) == 0 || len(b) > 64 {
		return "", Errorf(Invalid, "the cursor is not one this server issued; start again without it")
	}
	return string(b), nil
}

// NextCursor returns the cursor for the page after items when the page is
// full, and "" when it is the last page. id extracts an item's ID.
func NextCursor[T any](items []T, limit int, id func(T) string) string {
	if len(items) < limit || len(items) == 0 {
		return ""
	}
	return EncodeCursor(id(items[len(items)-1]))
}
