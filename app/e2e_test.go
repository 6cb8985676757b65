package app_test

import (
	"context"
	"slices"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/workspace"
)

const pw = "correct horse battery"

func client(t *testing.T, url string, opts ...sdk.Option) *sdk.Client {
	t.Helper()
	c, err := sdk.New(url, append(trustFor(url), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantCode(t *testing.T, err error, code cove.Code) {
	t.Helper()
	if cove.ErrorCode(err) != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
}

// TestFoundationEndToEnd walks the foundation through the SDK against the
// real server, restarts it on the same data dir, and checks that nothing
// committed was lost and the credentials still work.
func TestFoundationEndToEnd(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			cfg := apptest.Config(t.TempDir(), e.URL(t))
			m := apptest.Start(t, cfg)

			// Signup and login: the first account is the platform admin.
			anon := client(t, m.URL)
			admin, err := anon.Signup(ctx, identity.SignupInput{Email: "ada@example.com", Name: "Ada", Password: pw})
			if err != nil || !admin.Admin {
				t.Fatalf("signup: %+v %v", admin, err)
			}
			if _, err := anon.Signup(ctx, identity.SignupInput{Email: "bob@example.com", Name: "Bob", Password: pw}); err != nil {
				t.Fatal(err)
			}
			ada, bob := client(t, m.URL), client(t, m.URL)
			adaTokens, err := ada.Login(ctx, identity.LoginInput{Email: "ada@example.com", Password: pw})
			if err != nil {
				t.Fatal(err)
			}
			bobTokens, err := bob.Login(ctx, identity.LoginInput{Email: "bob@example.com", Password: pw})
			if err != nil {
				t.Fatal(err)
			}

			// Create a workspace, invite Bob as member, Bob accepts.
			ws, err := ada.CreateWorkspace(ctx, "genomics")
			if err != nil {
				t.Fatal(err)
			}
			inv, err := ada.Invite(ctx, ws.ID, "bob@example.com", workspace.Member)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bob.AcceptInvitation(ctx, inv.Token); err != nil {
				t.Fatal(err)
			}
			bobUser, _ := bob.Me(ctx)

			// Demote Bob to viewer: his next write is refused.
			if _, err := ada.ChangeRole(ctx, ws.ID, bobUser.ID, workspace.Viewer); err != nil {
				t.Fatal(err)
			}
			_, err = bob.RenameWorkspace(ctx, ws.ID, "mine now")
			wantCode(t, err, cove.Forbidden)
			_, err = bob.Invite(ctx, ws.ID, "eve@example.com", workspace.Owner)
			wantCode(t, err, cove.Forbidden)
			if got, err := bob.GetWorkspace(ctx, ws.ID); err != nil || got.Role != workspace.Viewer {
				t.Fatalf("viewer reads: %+v %v", got, err)
			}

			// A personal access token works like a login.
			pat, err := ada.CreateToken(ctx, httpapi.TokenInput{Name: "ci", ExpiresIn: "24h"})
			if err != nil {
				t.Fatal(err)
			}
			bot := client(t, m.URL, sdk.WithToken(pat.Secret))
			if _, err := bot.RenameWorkspace(ctx, ws.ID, "genomics-2"); err != nil {
				t.Fatalf("token write: %v", err)
			}

			// The audit log lists each step, for the platform admin and for
			// the workspace's owner; the viewer may not read it.
			entries, _, err := ada.ListAudit(ctx, sdk.AuditFilter{WorkspaceID: ws.ID})
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for _, e := range entries {
				actions = append(actions, e.Action)
			}
			for _, want := range []string{"workspace.create", "workspace.member.invite", "workspace.member.accept", "workspace.member.role", "workspace.rename"} {
				if !slices.Contains(actions, want) {
					t.Errorf("audit log of the workspace lacks %s: %v", want, actions)
				}
			}
			all, _, err := ada.ListAudit(ctx, sdk.AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var global []string
			for _, e := range all {
				global = append(global, e.Action)
			}
			for _, want := range []string{"user.signup", "user.login", "token.create"} {
				if !slices.Contains(global, want) {
					t.Errorf("audit log lacks %s: %v", want, global)
				}
			}
			_, _, err = bob.ListAudit(ctx, sdk.AuditFilter{WorkspaceID: ws.ID})
			wantCode(t, err, cove.Forbidden)

			// Restart on the same data dir and database.
			if err := m.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			m2 := apptest.Start(t, cfg)

			// Old credentials still work: the access token (same signing key),
			// the refresh token and the personal access token.
			ada2 := client(t, m2.URL, sdk.WithToken(adaTokens.AccessToken))
			got, err := ada2.GetWorkspace(ctx, ws.ID)
			if err != nil || got.Name != "genomics-2" {
				t.Fatalf("after restart: %+v %v", got, err)
			}
			bob2 := client(t, m2.URL)
			if _, err := bob2.Refresh(ctx, bobTokens.RefreshToken); err != nil {
				t.Fatalf("refresh after restart: %v", err)
			}
			_, err = bob2.RenameWorkspace(ctx, ws.ID, "still a viewer")
			wantCode(t, err, cove.Forbidden)
			if _, err := client(t, m2.URL, sdk.WithToken(pat.Secret)).Me(ctx); err != nil {
				t.Fatalf("token after restart: %v", err)
			}
			members, _, err := ada2.ListMembers(ctx, ws.ID, sdk.ListOptions{})
			if err != nil || len(members) != 2 {
				t.Fatalf("members after restart: %d %v", len(members), err)
			}
			entries2, _, err := ada2.ListAudit(ctx, sdk.AuditFilter{WorkspaceID: ws.ID})
			if err != nil || len(entries2) != len(entries)+0 && len(entries2) < len(entries) {
				t.Fatalf("audit after restart: %d entries (had %d) %v", len(entries2), len(entries), err)
			}
			// A user of no workspace sees nothing of it.
			eve := client(t, m2.URL)
			if _, err := eve.Signup(ctx, identity.SignupInput{Email: "eve@example.com", Name: "Eve", Password: pw}); err != nil {
				t.Fatal(err)
			}
			if _, err := eve.Login(ctx, identity.LoginInput{Email: "eve@example.com", Password: pw}); err != nil {
				t.Fatal(err)
			}
			_, err = eve.GetWorkspace(ctx, ws.ID)
			wantCode(t, err, cove.NotFound)
		})
	}
}
