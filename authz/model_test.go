package authz_test

import (
	"context"
	"testing"

	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/fga/fgatest"
)

// The people of the model test, named after what they are.
var (
	owner     = authz.User("usr_owner")    // owner of ws_a
	admin     = authz.User("usr_admin")    // admin of ws_a
	member    = authz.User("usr_member")   // member of ws_a, owner of comp_1
	viewer    = authz.User("usr_viewer")   // viewer of ws_a
	demoted   = authz.User("usr_demoted")  // viewer of ws_a, owner of comp_2 from when they were a member
	outsider  = authz.User("usr_outsider") // no tuples at all
	bViewer   = authz.User("usr_bviewer")  // viewer of ws_b
	bMember   = authz.User("usr_bmember")  // member of ws_b
	cMember   = authz.User("usr_cmember")  // member of ws_c
	padmin    = authz.User("usr_padmin")   // platform admin
	algOwner  = authz.User("usr_alg")      // algorithm provider of comp_1
	consumer  = authz.User("usr_consumer") // result consumer of comp_1
	runner    = authz.User("usr_runner")   // runner of comp_1
	watcher   = authz.User("usr_watcher")  // viewer of comp_1
	wsA, wsB  = authz.Workspace("ws_a"), authz.Workspace("ws_b")
	wsC       = authz.Workspace("ws_c")
	dsPublic  = authz.Dataset("ds_public")
	dsPrivate = authz.Dataset("ds_private")
	dsLimited = authz.Dataset("ds_restricted") // restricted to ws_b
	alPublic  = authz.Algorithm("al_public")
	alPrivate = authz.Algorithm("al_private")
	comp1     = authz.Computation("comp_1")
	comp2     = authz.Computation("comp_2")
	nodeA     = authz.Node("node_a") // ws_a's own node
	nodeP     = authz.Node("node_p") // a platform node
)

// fixture is the world the model test checks: workspace ws_a owns every
// catalog entry, computation and node, ws_b and ws_c are other tenants.
var fixture = []authz.Tuple{
	{padmin, authz.Admin, authz.Platform},
	{authz.Platform, authz.ParentPlatform, wsA},
	{authz.Platform, authz.ParentPlatform, wsB},
	{authz.Platform, authz.ParentPlatform, wsC},
	{owner, authz.Owner, wsA},
	{admin, authz.Admin, wsA},
	{member, authz.Member, wsA},
	{viewer, authz.Viewer, wsA},
	{demoted, authz.Viewer, wsA},
	{bViewer, authz.Viewer, wsB},
	{bMember, authz.Member, wsB},
	{cMember, authz.Member, wsC},

	{wsA, authz.ParentWorkspace, dsPublic},
	{authz.AllUsers, authz.Reader, dsPublic},
	{wsA, authz.ParentWorkspace, dsPrivate},
	{wsA, authz.ParentWorkspace, dsLimited},
	{authz.Userset(wsB, authz.Viewer), authz.Reader, dsLimited},
	{wsA, authz.ParentWorkspace, alPublic},
	{authz.AllUsers, authz.Reader, alPublic},
	{wsA, authz.ParentWorkspace, alPrivate},

	{wsA, authz.ParentWorkspace, comp1},
	{member, authz.Owner, comp1},
	{algOwner, authz.AlgorithmProvider, comp1},
	{authz.Userset(wsB, authz.Member), authz.DatasetProvider, comp1},
	{consumer, authz.ResultConsumer, comp1},
	{runner, authz.Runner, comp1},
	{watcher, authz.Viewer, comp1},
	{wsA, authz.ParentWorkspace, comp2},
	{demoted, authz.Owner, comp2},

	{wsA, authz.ParentWorkspace, nodeA},
	{authz.Platform, authz.ParentPlatform, nodeA},
	{authz.Platform, authz.ParentPlatform, nodeP},
}

func TestModel(t *testing.T) {
	tests := []struct {
		subject, relation, object string
		allowed                   bool
	}{
		// Workspace roles nest: owner in admin in member in viewer.
		{owner, authz.Owner, wsA, true},
		{owner, authz.Admin, wsA, true},
		{owner, authz.Member, wsA, true},
		{owner, authz.Viewer, wsA, true},
		{admin, authz.Owner, wsA, false},
		{admin, authz.Admin, wsA, true},
		{admin, authz.Member, wsA, true},
		{admin, authz.Viewer, wsA, true},
		{member, authz.Admin, wsA, false},
		{member, authz.Member, wsA, true},
		{member, authz.Viewer, wsA, true},
		{viewer, authz.Member, wsA, false},
		{viewer, authz.Viewer, wsA, true},
		{outsider, authz.Viewer, wsA, false},

		// Workspace permissions.
		{viewer, authz.CanView, wsA, true},
		{viewer, authz.CanWrite, wsA, false},
		{member, authz.CanWrite, wsA, true},
		{member, authz.CanManageMembers, wsA, false},
		{member, authz.CanReadAudit, wsA, false},
		{admin, authz.CanManageMembers, wsA, true},
		{admin, authz.CanReadAudit, wsA, true},
		{admin, authz.CanDelete, wsA, false},
		{owner, authz.CanDelete, wsA, true},
		{owner, authz.CanManageMembers, wsA, true},
		{owner, authz.CanReadAudit, wsA, true},
		{outsider, authz.CanView, wsA, false},
		{bViewer, authz.CanView, wsA, false},
		{bMember, authz.CanWrite, wsA, false},

		// Platform admins administer and audit every workspace but are not
		// its members, so they neither write in it nor see its private data.
		{padmin, authz.CanManage, authz.Platform, true},
		{owner, authz.CanManage, authz.Platform, false},
		{padmin, authz.CanView, wsA, true},
		{padmin, authz.CanReadAudit, wsB, true},
		{padmin, authz.CanManageMembers, wsC, true},
		{padmin, authz.CanWrite, wsA, false},
		{padmin, authz.CanDelete, wsA, false},
		{padmin, authz.Member, wsA, false},
		{padmin, authz.CanView, dsPrivate, false},
		{padmin, authz.CanView, comp1, false},

		// Public: every user sees and uses it; only its workspace edits it.
		{outsider, authz.CanView, dsPublic, true},
		{outsider, authz.CanUse, dsPublic, true},
		{bViewer, authz.CanView, dsPublic, true},
		{outsider, authz.CanEdit, dsPublic, false},
		{outsider, authz.CanDelete, dsPublic, false},
		{outsider, authz.CanView, alPublic, true},
		{outsider, authz.CanUse, alPublic, true},
		{outsider, authz.CanEdit, alPublic, false},

		// Private: the owning workspace alone.
		{viewer, authz.CanView, dsPrivate, true},
		{viewer, authz.CanUse, dsPrivate, false},
		{viewer, authz.CanEdit, dsPrivate, false},
		{member, authz.CanUse, dsPrivate, true},
		{member, authz.CanEdit, dsPrivate, true},
		{member, authz.CanDelete, dsPrivate, false},
		{admin, authz.CanDelete, dsPrivate, true},
		{owner, authz.CanDelete, dsPrivate, true},
		{outsider, authz.CanView, dsPrivate, false},
		{bViewer, authz.CanView, dsPrivate, false},
		{bMember, authz.CanUse, dsPrivate, false},
		{member, authz.CanEdit, alPrivate, true},
		{bViewer, authz.CanView, alPrivate, false},
		{outsider, authz.CanUse, alPrivate, false},

		// Restricted: the owning workspace and every role of a listed one.
		{bViewer, authz.CanView, dsLimited, true},
		{bViewer, authz.CanUse, dsLimited, true},
		{bMember, authz.CanView, dsLimited, true},
		{bMember, authz.CanEdit, dsLimited, false},
		{bMember, authz.CanDelete, dsLimited, false},
		{cMember, authz.CanView, dsLimited, false},
		{outsider, authz.CanView, dsLimited, false},
		{viewer, authz.CanView, dsLimited, true},
		{member, authz.CanEdit, dsLimited, true},

		// Computation roles.
		{member, authz.CanView, comp1, true},
		{member, authz.CanEdit, comp1, true},
		{member, authz.CanRun, comp1, true},
		{member, authz.CanApprove, comp1, false},
		{member, authz.CanReadResults, comp1, false},
		{consumer, authz.CanReadResults, comp1, true},
		{consumer, authz.CanView, comp1, true},
		{consumer, authz.CanRun, comp1, false},
		{consumer, authz.CanEdit, comp1, false},
		{runner, authz.CanRun, comp1, true},
		{runner, authz.CanView, comp1, true},
		{runner, authz.CanReadResults, comp1, false},
		{runner, authz.CanEdit, comp1, false},
		{watcher, authz.CanView, comp1, true},
		{watcher, authz.CanRun, comp1, false},
		{watcher, authz.CanReadResults, comp1, false},
		{algOwner, authz.CanView, comp1, true},
		{algOwner, authz.CanApprove, comp1, false},
		{algOwner, authz.CanReadResults, comp1, false},
		{bMember, authz.CanApprove, comp1, true}, // dataset provider through ws_b#member
		{bMember, authz.CanView, comp1, true},
		{bMember, authz.CanRun, comp1, false},
		{bViewer, authz.CanApprove, comp1, false},
		{bViewer, authz.CanView, comp1, false},
		{admin, authz.CanView, comp1, true},
		{admin, authz.CanEdit, comp1, true},
		{admin, authz.CanRun, comp1, false},
		{admin, authz.CanReadResults, comp1, false},
		{owner, authz.CanReadResults, comp1, false},
		{viewer, authz.CanView, comp1, true},
		{viewer, authz.CanEdit, comp1, false},
		{outsider, authz.CanView, comp1, false},
		{cMember, authz.CanView, comp1, false},
		// An owner demoted to viewer keeps the view, not the powers.
		{demoted, authz.CanView, comp2, true},
		{demoted, authz.CanEdit, comp2, false},
		{demoted, authz.CanRun, comp2, false},

		// Nodes.
		{viewer, authz.CanView, nodeA, true},
		{member, authz.CanManage, nodeA, false},
		{admin, authz.CanManage, nodeA, true},
		{padmin, authz.CanManage, nodeA, true},
		{bMember, authz.CanView, nodeA, false},
		{padmin, authz.CanView, nodeP, true},
		{padmin, authz.CanManage, nodeP, true},
		{owner, authz.CanView, nodeP, false},
		{owner, authz.CanManage, nodeP, false},
	}

	for _, e := range fgatest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			store := fgatest.MustOpen(t, e.Config(t))
			fgatest.MustGrant(t, store, fixture...)
			for _, tt := range tests {
				got, err := store.Check(context.Background(), tt.subject, tt.relation, tt.object)
				if err != nil {
					t.Errorf("Check(%s %s %s): %v", tt.subject, tt.relation, tt.object, err)
					continue
				}
				if got != tt.allowed {
					t.Errorf("Check(%s %s %s) = %v, want %v", tt.subject, tt.relation, tt.object, got, tt.allowed)
				}
			}
		})
	}
}
