package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/node/nodetest"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sdk"
)

func TestNodeCommands(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	admin := NewUser(t)
	admin.MustLogin(m.URL, "admin@example.com")

	// The secret alone on stdout; how to use it on stderr.
	r := admin.MustRun("", "node", "enroll-token", "create", "--ttl", "30m", "--no-auto-approve")
	secret := strings.TrimSpace(r.Stdout)
	if !strings.HasPrefix(secret, "cve_") || !strings.Contains(r.Stderr, "cove node run --server "+m.URL+" --token <secret>") || !strings.Contains(r.Stderr, "approve it with") {
		t.Fatalf("enroll-token create printed %q / %q", r.Stdout, r.Stderr)
	}
	created := mustJSON[node.CreatedEnrollToken](t, admin.MustRun("", "node", "enroll-token", "create", "-o", "json").Stdout)
	if created.Token == "" || !created.AutoApprove {
		t.Fatalf("json token %+v", created)
	}

	anon, err := sdk.New(m.URL)
	if err != nil {
		t.Fatal(err)
	}
	keys := nodetest.NewKeys(t, "")
	rep, err := anon.EnrollNode(context.Background(), runproto.EnrollRequest{
		Token: secret, Name: "edge-1", Capacity: runproto.Resources{CPUs: 2, MemoryBytes: 4 << 30}, Drivers: []string{"wasm"},
		Labels: map[string]string{"zone": "eu"}, CSR: keys.CSR, NATSUser: keys.NATSUser,
	})
	if err != nil {
		t.Fatal(err)
	}

	r = admin.MustRun("", "node", "list", "--state", "pending")
	if !strings.Contains(r.Stdout, rep.NodeID) || !strings.Contains(r.Stdout, "pending") || !strings.Contains(r.Stdout, "4.0 GiB") {
		t.Fatalf("node list printed %q", r.Stdout)
	}
	nodes := mustJSON[list[node.Node]](t, admin.MustRun("", "-o", "json", "node", "list").Stdout)
	if len(nodes.Items) != 1 || nodes.Items[0].ID != rep.NodeID {
		t.Fatalf("json list %+v", nodes)
	}
	r = admin.MustRun("", "node", "approve", rep.NodeID)
	if !strings.Contains(r.Stdout, "Approved node edge-1") || !strings.Contains(r.Stdout, "active") {
		t.Fatalf("approve printed %q", r.Stdout)
	}
	r = admin.MustRun("", "node", "describe", rep.NodeID)
	for _, want := range []string{"edge-1", "platform node", "zone=eu", "wasm", "active"} {
		if !strings.Contains(r.Stdout, want) {
			t.Fatalf("describe lacks %q:\n%s", want, r.Stdout)
		}
	}
	if n := mustJSON[node.Node](t, admin.MustRun("", "node", "drain", rep.NodeID, "-o", "json").Stdout); n.State != node.Draining {
		t.Fatalf("drain answered %+v", n)
	}
	r = admin.MustRun("", "node", "enroll-token", "list")
	if !strings.Contains(r.Stdout, "used") || !strings.Contains(r.Stdout, rep.NodeID) || !strings.Contains(r.Stdout, "unused") {
		t.Fatalf("enroll-token list printed %q", r.Stdout)
	}
	if r := admin.Run("", "node", "enroll-token", "revoke", created.ID); r.Code != 0 {
		t.Fatalf("revoke: %+v", r)
	}
	if r := admin.Run("", "node", "list", "--state", "sleeping"); r.Code == 0 || !strings.Contains(r.Stderr, "--state") {
		t.Fatalf("bad state: %+v", r)
	}
	if r := admin.Run("", "node", "enroll-token", "create", "--ttl", "30s"); r.Code == 0 {
		t.Fatalf("too short a ttl: %+v", r)
	}
	r = admin.MustRun("", "node", "remove", rep.NodeID, "--force")
	if !strings.Contains(r.Stdout, "Removed node "+rep.NodeID) {
		t.Fatalf("remove printed %q", r.Stdout)
	}
	if r := admin.Run("", "node", "describe", rep.NodeID); r.Code == 0 || !strings.Contains(r.Stderr, "not found") {
		t.Fatalf("describe after remove: %+v", r)
	}
	if r := admin.MustRun("", "node"); !strings.Contains(r.Stdout, "cove node run --server URL --token TOKEN") {
		t.Fatalf("node help: %q", r.Stdout)
	}
}
