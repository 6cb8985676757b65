package authz_test

import (
	"context"
	"slices"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/fga/fgatest"
)

// mustAuthorizer returns an Authorizer over a new SQLite store holding
// tuples.
func mustAuthorizer(tb testing.TB, tuples ...authz.Tuple) *authz.Authorizer {
	tb.Helper()
	store := fgatest.MustOpenSQLite(tb)
	fgatest.MustGrant(tb, store, tuples...)
	return authz.New(store)
}

func TestRequire(t *testing.T) {
	a := mustAuthorizer(t, fixture...)
	ctx := context.Background()
	tests := []struct {
		name                      string
		subject, relation, object string
		want                      cove.Code
	}{
		{"allowed", member, authz.CanWrite, wsA, ""},
		{"denied", viewer, authz.CanWrite, wsA, cove.Forbidden},
		{"no caller", "", authz.CanView, wsA, cove.Unauthenticated},
		{"unknown relation", member, "can_fly", wsA, cove.Invalid},
		{"unknown type", member, authz.CanView, "galaxy:g_1", cove.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.Require(ctx, tt.subject, tt.relation, tt.object)
			if got := cove.ErrorCode(err); got != tt.want {
				t.Errorf("Require(%q %s %s) = %v, want code %q", tt.subject, tt.relation, tt.object, err, tt.want)
			}
		})
	}
}

func TestRequireVisible(t *testing.T) {
	a := mustAuthorizer(t, fixture...)
	ctx := context.Background()
	const notFound = "dataset not found"
	tests := []struct {
		name                      string
		subject, relation, object string
		want                      cove.Code
	}{
		{"allowed", member, authz.CanEdit, dsPrivate, ""},
		{"visible but not allowed", viewer, authz.CanEdit, dsPrivate, cove.Forbidden},
		{"invisible", bViewer, authz.CanEdit, dsPrivate, cove.NotFound},
		{"invisible, asked to view", outsider, authz.CanView, dsPrivate, cove.NotFound},
		{"does not exist", member, authz.CanEdit, authz.Dataset("ds_missing"), cove.NotFound},
		{"public, not allowed", outsider, authz.CanDelete, dsPublic, cove.Forbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.RequireVisible(ctx, tt.subject, authz.CanView, tt.relation, tt.object, notFound)
			if got := cove.ErrorCode(err); got != tt.want {
				t.Fatalf("RequireVisible(%s %s %s) = %v, want code %q", tt.subject, tt.relation, tt.object, err, tt.want)
			}
			// A hidden object and a missing one must be indistinguishable.
			if tt.want == cove.NotFound && cove.ErrorMessage(err) != notFound {
				t.Errorf("message = %q, want %q", cove.ErrorMessage(err), notFound)
			}
		})
	}
}

func TestGrantRevoke(t *testing.T) {
	a := mustAuthorizer(t, authz.Tuple{authz.Platform, authz.ParentPlatform, wsA})
	ctx := context.Background()
	grant := authz.Tuple{member, authz.Member, wsA}

	if err := a.Grant(ctx, grant); err != nil {
		t.Fatal(err)
	}
	if err := a.Require(ctx, member, authz.CanWrite, wsA); err != nil {
		t.Fatalf("after Grant: %v", err)
	}

	// Promote: one Write swaps the role tuples.
	promoted := authz.Tuple{member, authz.Admin, wsA}
	if err := a.Write(ctx, []authz.Tuple{promoted}, []authz.Tuple{grant}); err != nil {
		t.Fatal(err)
	}
	if err := a.Require(ctx, member, authz.CanManageMembers, wsA); err != nil {
		t.Fatalf("after promotion: %v", err)
	}

	if err := a.Revoke(ctx, promoted); err != nil {
		t.Fatal(err)
	}
	if err := a.Require(ctx, member, authz.CanView, wsA); cove.ErrorCode(err) != cove.Forbidden {
		t.Fatalf("after Revoke: %v, want forbidden", err)
	}
	if err := a.Grant(ctx); err != nil {
		t.Errorf("Grant of nothing: %v", err)
	}
}

func TestListObjects(t *testing.T) {
	a := mustAuthorizer(t, fixture...)
	ctx := context.Background()
	tests := []struct {
		subject, relation, objectType string
		want                          []string
	}{
		{bViewer, authz.CanView, authz.TypeDataset, []string{"ds_public", "ds_restricted"}},
		{member, authz.CanEdit, authz.TypeDataset, []string{"ds_private", "ds_public", "ds_restricted"}},
		{outsider, authz.CanView, authz.TypeAlgorithm, []string{"al_public"}},
		{padmin, authz.CanReadAudit, authz.TypeWorkspace, []string{"ws_a", "ws_b", "ws_c"}},
		{consumer, authz.CanReadResults, authz.TypeComputation, []string{"comp_1"}},
		{outsider, authz.CanView, authz.TypeWorkspace, []string{}},
	}
	for _, tt := range tests {
		got, err := a.ListObjects(ctx, tt.subject, tt.relation, tt.objectType)
		if err != nil {
			t.Errorf("ListObjects(%s %s %s): %v", tt.subject, tt.relation, tt.objectType, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ListObjects(%s %s %s) = %q, want %q", tt.subject, tt.relation, tt.objectType, got, tt.want)
		}
	}
}

func TestHelpers(t *testing.T) {
	tests := []struct{ got, want string }{
		{authz.User("usr_a"), "user:usr_a"},
		{authz.Workspace("ws_a"), "workspace:ws_a"},
		{authz.Dataset("ds_a"), "dataset:ds_a"},
		{authz.Algorithm("al_a"), "algorithm:al_a"},
		{authz.Computation("cmp_a"), "computation:cmp_a"},
		{authz.Node("node_a"), "node:node_a"},
		{authz.Userset(authz.Workspace("ws_a"), authz.Viewer), "workspace:ws_a#viewer"},
		{authz.ID("dataset:ds_a"), "ds_a"},
		{authz.ID("ds_a"), ""},
		{authz.Platform, "platform:cove"},
		{authz.AllUsers, "user:*"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
