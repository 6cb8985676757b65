package sdk_test

import (
	"context"
	"strings"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/node/nodetest"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sdk"
)

// TestNodes walks the node routes through the SDK against the real control
// plane, whose registry issues real NATS credentials.
func TestNodes(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	ctx := context.Background()
	admin, _ := MustLogin(t, m.URL, "admin@example.com")
	owner, _ := MustLogin(t, m.URL, "owner@example.com")
	anon := MustNew(t, m.URL)

	tok, err := admin.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{ExpiresIn: "30m"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.AutoApprove || !strings.HasPrefix(tok.Token, "cve_") {
		t.Fatalf("token %+v", tok)
	}
	_, err = owner.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{})
	wantCode(t, err, cove.Forbidden)
	_, err = admin.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{ExpiresIn: "soon"})
	wantCode(t, err, cove.Invalid)

	keys := nodetest.NewKeys(t, "")
	req := runproto.EnrollRequest{Token: tok.Token, Name: "edge-1", Capacity: runproto.Resources{CPUs: 2, MemoryBytes: 4 << 30}, Drivers: []string{"wasm"},
		CSR: keys.CSR, NATSUser: keys.NATSUser}
	// Without the node's public keys, enrollment is refused and the token
	// stays usable.
	_, err = anon.EnrollNode(ctx, runproto.EnrollRequest{Token: tok.Token, Name: "edge-1", Capacity: req.Capacity, Drivers: req.Drivers})
	wantCode(t, err, cove.Invalid)
	rep, err := anon.EnrollNode(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !cove.ValidID("node", rep.NodeID) || !strings.Contains(rep.Certificate, "-----BEGIN CERTIFICATE-----") ||
		!strings.Contains(rep.Chain, "-----BEGIN CERTIFICATE-----") || rep.JWT == "" || rep.NATSURL == "" {
		t.Fatalf("reply %+v", rep)
	}
	if rep.HeartbeatMillis != 1000 { // apptest.Config's node.heartbeat_interval
		t.Errorf("the node is told to heartbeat every %d ms, want 1000", rep.HeartbeatMillis)
	}
	_, err = anon.EnrollNode(ctx, req)
	wantCode(t, err, cove.Unauthenticated)

	list, next, err := admin.ListNodes(ctx, sdk.NodeFilter{State: node.Pending}, sdk.ListOptions{})
	if err != nil || len(list) != 1 || next != "" || list[0].ID != rep.NodeID || list[0].TEE != "none" {
		t.Fatalf("pending nodes %+v %q %v", list, next, err)
	}
	if list, _, err := owner.ListNodes(ctx, sdk.NodeFilter{}, sdk.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("owner sees %+v %v", list, err)
	}
	_, err = owner.GetNode(ctx, rep.NodeID)
	wantCode(t, err, cove.NotFound)
	_, _, err = admin.ListNodes(ctx, sdk.NodeFilter{State: "bogus"}, sdk.ListOptions{})
	wantCode(t, err, cove.Invalid)

	n, err := admin.ApproveNode(ctx, rep.NodeID)
	if err != nil || n.State != node.Active {
		t.Fatalf("approve: %+v %v", n, err)
	}
	if n, err = admin.DrainNode(ctx, rep.NodeID); err != nil || n.State != node.Draining {
		t.Fatalf("drain: %+v %v", n, err)
	}
	if n, err = admin.GetNode(ctx, rep.NodeID); err != nil || n.State != node.Draining || n.Capacity.CPUs != 2 {
		t.Fatalf("get: %+v %v", n, err)
	}

	tokens, _, err := admin.ListEnrollTokens(ctx, "", sdk.ListOptions{})
	if err != nil || len(tokens) != 1 || tokens[0].NodeID != rep.NodeID || tokens[0].UsedAt == nil {
		t.Fatalf("tokens %+v %v", tokens, err)
	}
	wantCode(t, admin.RevokeEnrollToken(ctx, tok.ID), cove.Conflict)
	unused, err := admin.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeEnrollToken(ctx, unused.ID); err != nil {
		t.Fatal(err)
	}
	_, err = anon.EnrollNode(ctx, runproto.EnrollRequest{Token: unused.Token, Name: "edge-2", Capacity: req.Capacity, Drivers: req.Drivers, CSR: keys.CSR, NATSUser: keys.NATSUser})
	wantCode(t, err, cove.Unauthenticated)

	wantCode(t, owner.RemoveNode(ctx, rep.NodeID, false), cove.NotFound)
	if err := admin.RemoveNode(ctx, rep.NodeID, true); err != nil {
		t.Fatal(err)
	}
	_, err = admin.GetNode(ctx, rep.NodeID)
	wantCode(t, err, cove.NotFound)
}
