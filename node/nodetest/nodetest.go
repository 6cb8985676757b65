// Package nodetest helps tests enroll nodes without running one.
package nodetest

import (
	"testing"

	"github.com/covecompute/cove/computenode"
)

// NewKeys makes the keys a node makes before it enrolls, with a
// certificate request for common name cn (which enrollment ignores and
// renewal checks).
func NewKeys(tb testing.TB, cn string) computenode.Keys {
	tb.Helper()
	k, err := computenode.NewKeys(cn)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}
