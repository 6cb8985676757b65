package sqlstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sqlstore"
)

// TestMarkNodesSeen: one call writes last_seen_at of more nodes than fit
// one statement, skips IDs of nodes that are gone, and leaves lost_at
// alone (a node lost meanwhile stays lost).
func TestMarkNodesSeen(t *testing.T) {
	for name, url := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := sqlstore.NewNodeStore(mustOpen(t, url))
			now := time.Now().UTC().Truncate(time.Second)
			var ids []string
			for i := range 1_001 {
				n := &node.Node{ID: fmt.Sprintf("node_%026d", i), Name: fmt.Sprint("n", i), TEE: "none", Drivers: []string{"wasm"},
					Labels: map[string]string{}, Capacity: runproto.Resources{CPUs: 1, MemoryBytes: 1 << 30, DiskBytes: 1 << 30}, EnrollTokenID: "ent_x",
					CredentialExpiresAt: now.Add(time.Hour), CreatedAt: now, UpdatedAt: now}
				if err := s.CreateNode(ctx, n); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, n.ID)
			}
			lost := ids[7]
			if err := s.MarkNodeLost(ctx, lost, now.Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
			at := now.Add(time.Second)
			if err := s.MarkNodesSeen(ctx, append(ids, "node_gone"), at); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{ids[0], ids[499], ids[500], ids[1_000], lost} {
				n, err := s.FindNodeByID(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if n.LastSeenAt == nil || !n.LastSeenAt.Equal(at) {
					t.Fatalf("%s last seen %v, want %v", id, n.LastSeenAt, at)
				}
				if (n.LostAt != nil) != (id == lost) {
					t.Fatalf("%s lost at %v", id, n.LostAt)
				}
			}
			if err := s.MarkNodesSeen(ctx, nil, at); err != nil {
				t.Fatalf("no nodes: %v", err)
			}
		})
	}
}
