package workspace_test

import (
	"context"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sqlstore"
	"github.com/covecompute/cove/workspace"
)

func wantCode(tb testing.TB, err error, code cove.Code) {
	tb.Helper()
	if got := cove.ErrorCode(err); got != code {
		tb.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

// user signs up email and returns its principal.
func user(tb testing.TB, m *app.Main, email string) cove.Principal {
	tb.Helper()
	u, err := m.Identity.Signup(context.Background(), cove.Principal{}, identity.SignupInput{Email: email, Name: email, Password: "correct horse battery"})
	if err != nil {
		tb.Fatal(err)
	}
	return cove.Principal{UserID: u.ID, Email: u.Email}
}

// join invites p into ws with role and accepts.
func join(tb testing.TB, s *workspace.Service, owner cove.Principal, ws string, p cove.Principal, role workspace.Role) {
	tb.Helper()
	ctx := context.Background()
	inv, err := s.Invite(ctx, owner, ws, p.Email, role)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.Accept(ctx, p, inv.Token); err != nil {
		tb.Fatal(err)
	}
}

func forEngine(t *testing.T, f func(t *testing.T, m *app.Main)) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) { f(t, apptest.StartEngine(t, e)) })
	}
}

func TestRolesAndIsolation(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		s := m.Workspace
		owner, admin, member, viewer, stranger := user(t, m, "o@x.io"), user(t, m, "a@x.io"), user(t, m, "m@x.io"), user(t, m, "v@x.io"), user(t, m, "s@x.io")

		_, err := s.Create(ctx, owner, "")
		wantCode(t, err, cove.Invalid)
		// Strings that look like SQL or HTML are data, stored and returned verbatim.
		hostile := `Robert'); DROP TABLE workspaces;-- <script>alert(1)</script>`
		ws, err := s.Create(ctx, owner, hostile)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, owner, ws.ID); err != nil || got.Name != hostile || got.Role != workspace.Owner {
			t.Fatalf("get: %+v %v", got, err)
		}
		join(t, s, owner, ws.ID, admin, workspace.Admin)
		join(t, s, owner, ws.ID, member, workspace.Member)
		join(t, s, owner, ws.ID, viewer, workspace.Viewer)

		other, err := s.Create(ctx, stranger, "other")
		if err != nil {
			t.Fatal(err)
		}

		// Who may do what in ws.
		for _, c := range []struct {
			name string
			p    cove.Principal
			do   func(p cove.Principal) error
			code cove.Code
		}{
			{"viewer reads", viewer, func(p cove.Principal) error { _, err := s.Get(ctx, p, ws.ID); return err }, ""},
			{"viewer lists members", viewer, func(p cove.Principal) error { _, err := s.Members(ctx, p, ws.ID, cove.Page{}); return err }, ""},
			{"viewer renames", viewer, func(p cove.Principal) error { _, err := s.Rename(ctx, p, ws.ID, "x"); return err }, cove.Forbidden},
			{"viewer invites", viewer, func(p cove.Principal) error {
				_, err := s.Invite(ctx, p, ws.ID, "n@x.io", workspace.Viewer)
				return err
			}, cove.Forbidden},
			{"member invites", member, func(p cove.Principal) error {
				_, err := s.Invite(ctx, p, ws.ID, "n@x.io", workspace.Viewer)
				return err
			}, cove.Forbidden},
			{"member deletes", member, func(p cove.Principal) error { return s.Delete(ctx, p, ws.ID) }, cove.Forbidden},
			{"admin invites an owner", admin, func(p cove.Principal) error { _, err := s.Invite(ctx, p, ws.ID, "n@x.io", workspace.Owner); return err }, cove.Forbidden},
			{"admin demotes the owner", admin, func(p cove.Principal) error {
				_, err := s.ChangeRole(ctx, p, ws.ID, owner.UserID, workspace.Viewer)
				return err
			}, cove.Forbidden},
			{"admin removes the owner", admin, func(p cove.Principal) error { return s.RemoveMember(ctx, p, ws.ID, owner.UserID) }, cove.Forbidden},
			{"admin deletes", admin, func(p cove.Principal) error { return s.Delete(ctx, p, ws.ID) }, cove.Forbidden},
			{"admin invites a member", admin, func(p cove.Principal) error {
				_, err := s.Invite(ctx, p, ws.ID, "n@x.io", workspace.Member)
				return err
			}, ""},
			{"bad role", admin, func(p cove.Principal) error { _, err := s.Invite(ctx, p, ws.ID, "n@x.io", "root"); return err }, cove.Invalid},
			{"bad email", admin, func(p cove.Principal) error { _, err := s.Invite(ctx, p, ws.ID, "nope", workspace.Member); return err }, cove.Invalid},
			// A stranger learns nothing about ws: the same answer as for no workspace at all.
			{"stranger reads", stranger, func(p cove.Principal) error { _, err := s.Get(ctx, p, ws.ID); return err }, cove.NotFound},
			{"stranger lists members", stranger, func(p cove.Principal) error { _, err := s.Members(ctx, p, ws.ID, cove.Page{}); return err }, cove.NotFound},
			{"stranger renames", stranger, func(p cove.Principal) error { _, err := s.Rename(ctx, p, ws.ID, "x"); return err }, cove.NotFound},
			{"stranger deletes", stranger, func(p cove.Principal) error { return s.Delete(ctx, p, ws.ID) }, cove.NotFound},
			{"stranger invites", stranger, func(p cove.Principal) error { _, err := s.Invite(ctx, p, ws.ID, "s@x.io", workspace.Owner); return err }, cove.NotFound},
			{"member of ws reads other", member, func(p cove.Principal) error { _, err := s.Get(ctx, p, other.ID); return err }, cove.NotFound},
			{"unknown workspace", owner, func(p cove.Principal) error { _, err := s.Get(ctx, p, "ws_nope"); return err }, cove.NotFound},
		} {
			t.Run(c.name, func(t *testing.T) { wantCode(t, c.do(c.p), c.code) })
		}

		mine, err := s.List(ctx, member, cove.Page{})
		if err != nil || len(mine) != 1 || mine[0].ID != ws.ID || mine[0].Role != workspace.Member {
			t.Fatalf("member's list: %+v %v", mine, err)
		}

		// Change role: the member becomes viewer and loses write rights at once.
		if _, err := s.ChangeRole(ctx, admin, ws.ID, member.UserID, workspace.Viewer); err != nil {
			t.Fatal(err)
		}
		ms, _ := s.Members(ctx, owner, ws.ID, cove.Page{})
		if len(ms) != 4 {
			t.Fatalf("members: %d, want 4", len(ms))
		}
		// Remove: the removed member cannot see the workspace any more.
		if err := s.RemoveMember(ctx, admin, ws.ID, member.UserID); err != nil {
			t.Fatal(err)
		}
		_, err = s.Get(ctx, member, ws.ID)
		wantCode(t, err, cove.NotFound)
	})
}

func TestLastOwner(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		s := m.Workspace
		o1, o2 := user(t, m, "o1@x.io"), user(t, m, "o2@x.io")
		ws, err := s.Create(ctx, o1, "w")
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, s.RemoveMember(ctx, o1, ws.ID, o1.UserID), cove.Conflict)
		_, err = s.ChangeRole(ctx, o1, ws.ID, o1.UserID, workspace.Admin)
		wantCode(t, err, cove.Conflict)
		if g, _ := s.Get(ctx, o1, ws.ID); g == nil || g.Role != workspace.Owner {
			t.Fatal("a refused demotion changed the role")
		}

		join(t, s, o1, ws.ID, o2, workspace.Owner)
		if _, err := s.ChangeRole(ctx, o2, ws.ID, o1.UserID, workspace.Member); err != nil {
			t.Fatal(err)
		}
		wantCode(t, s.RemoveMember(ctx, o2, ws.ID, o2.UserID), cove.Conflict)
		// The demoted owner may leave.
		if err := s.RemoveMember(ctx, o1, ws.ID, o1.UserID); err != nil {
			t.Fatal(err)
		}
	})
}

func TestInvitations(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		clk := time.Now()
		s := workspace.NewService(sqlstore.NewWorkspaceStore(m.DB), m.Authz, nil, func() time.Time { return clk })
		owner, alice, eve := user(t, m, "o@x.io"), user(t, m, "alice@x.io"), user(t, m, "eve@x.io")
		ws, err := s.Create(ctx, owner, "w")
		if err != nil {
			t.Fatal(err)
		}
		inv, err := s.Invite(ctx, owner, ws.ID, "ALICE@x.io", workspace.Member)
		if err != nil {
			t.Fatal(err)
		}
		// Addressed to Alice: Eve holding the token cannot use it.
		_, err = s.Accept(ctx, eve, inv.Token)
		wantCode(t, err, cove.Forbidden)
		for _, bad := range []string{"", "cvi_", "cvi_nope", "xyz", inv.Token + "x"} {
			_, err := s.Accept(ctx, alice, bad)
			wantCode(t, err, cove.NotFound)
		}
		if _, err := s.Accept(ctx, alice, inv.Token); err != nil {
			t.Fatal(err)
		}
		_, err = s.Accept(ctx, alice, inv.Token)
		wantCode(t, err, cove.Conflict)

		// Revoked and expired invitations.
		inv2, _ := s.Invite(ctx, owner, ws.ID, "eve@x.io", workspace.Viewer)
		if err := s.RevokeInvitation(ctx, owner, ws.ID, inv2.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.Accept(ctx, eve, inv2.Token)
		wantCode(t, err, cove.NotFound)
		inv3, _ := s.Invite(ctx, owner, ws.ID, "eve@x.io", workspace.Viewer)
		clk = clk.Add(workspace.InvitationTTL + time.Second)
		_, err = s.Accept(ctx, eve, inv3.Token)
		wantCode(t, err, cove.NotFound)
		wantCode(t, s.RevokeInvitation(ctx, owner, ws.ID, inv.ID), cove.Conflict)

		invs, err := s.Invitations(ctx, owner, ws.ID, cove.Page{})
		if err != nil || len(invs) != 3 {
			t.Fatalf("invitations: %d %v", len(invs), err)
		}
	})
}

func TestDelete(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		s := m.Workspace
		owner, viewer := user(t, m, "o@x.io"), user(t, m, "v@x.io")
		ws, _ := s.Create(ctx, owner, "w")
		join(t, s, owner, ws.ID, viewer, workspace.Viewer)
		if err := s.Delete(ctx, owner, ws.ID); err != nil {
			t.Fatal(err)
		}
		for _, p := range []cove.Principal{owner, viewer} {
			_, err := s.Get(ctx, p, ws.ID)
			wantCode(t, err, cove.NotFound)
		}
		if l, _ := s.List(ctx, viewer, cove.Page{}); len(l) != 0 {
			t.Fatalf("deleted workspace still listed: %+v", l)
		}
	})
}

type activeRuns int

func (n activeRuns) CountActiveRuns(context.Context, string) (int, error) { return int(n), nil }

func TestDeleteRefusedWhileRunsAreActive(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	ctx := context.Background()
	s := workspace.NewService(sqlstore.NewWorkspaceStore(m.DB), m.Authz, activeRuns(2), nil)
	owner := user(t, m, "o@x.io")
	ws, _ := s.Create(ctx, owner, "w")
	wantCode(t, s.Delete(ctx, owner, ws.ID), cove.Conflict)
	if _, err := s.Get(ctx, owner, ws.ID); err != nil {
		t.Fatalf("refused delete removed the workspace: %v", err)
	}
}
