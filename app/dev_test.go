package app_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
)

// TestDevNodeEnrollsAgain: `cove serve --dev` runs its embedded node over
// HTTPS, and when the node's identity cannot be used any more (a node.json
// from an older Cove here) the next start enrolls it again instead of
// failing.
func TestDevNodeEnrollsAgain(t *testing.T) {
	cfg := apptest.Config(t.TempDir(), "")
	cfg.Dev = true
	cfg.HTTP.TLS.Mode = "auto"
	ctx := context.Background()
	embedded := func(m *app.Main) string {
		t.Helper()
		pw, err := os.ReadFile(filepath.Join(cfg.DataDir, "dev-admin-password"))
		if err != nil {
			t.Fatal(err)
		}
		trustCA(t, m)
		c := client(t, m.URL)
		if _, err := c.Login(ctx, identity.LoginInput{Email: app.DevAdminEmail, Password: strings.TrimSpace(string(pw))}); err != nil {
			t.Fatal(err)
		}
		nodes, _, err := c.ListNodes(ctx, sdk.NodeFilter{}, sdk.ListOptions{})
		if err != nil || len(nodes) == 0 {
			t.Fatalf("nodes %v %v", nodes, err)
		}
		for _, n := range nodes {
			if n.Online {
				return n.ID
			}
		}
		t.Fatalf("no embedded node online: %+v", nodes)
		return ""
	}
	m := apptest.Start(t, cfg)
	first := embedded(m)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(map[string]string{"node_id": first, "nats_url": "nats://127.0.0.1:1", "creds": "an older Cove's credential"})
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "node", "node.json"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	m = apptest.Start(t, cfg)
	if again := embedded(m); again == first {
		t.Errorf("the embedded node kept its unusable identity %s", first)
	}
}
