package fga_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/fga/fgatest"
)

// BenchmarkCheck measures the check every request makes, on a store with a
// few thousand tuples: may a member edit a private dataset of their
// workspace (allowed), and may a user of another workspace (denied, which
// walks every branch of the rule)? Each is measured with the answer
// remembered and as the first check after a write.
func BenchmarkCheck(b *testing.B) {
	for _, e := range fgatest.Engines() {
		b.Run(e.Name, func(b *testing.B) {
			s := fgatest.MustOpen(b, e.Config(b))
			var tuples []authz.Tuple
			for w := range 100 {
				ws := authz.Workspace(fmt.Sprintf("ws_%03d", w))
				tuples = append(tuples,
					authz.NewTuple(authz.Platform, authz.ParentPlatform, ws),
					authz.NewTuple(authz.User(fmt.Sprintf("usr_%03d_owner", w)), authz.Owner, ws),
				)
				for u := range 5 {
					tuples = append(tuples, authz.NewTuple(authz.User(fmt.Sprintf("usr_%03d_%d", w, u)), authz.Member, ws))
				}
				for d := range 10 {
					tuples = append(tuples, authz.NewTuple(ws, authz.ParentWorkspace, authz.Dataset(fmt.Sprintf("ds_%03d_%d", w, d))))
				}
			}
			fgatest.MustGrant(b, s, tuples...)

			cases := []struct {
				name    string
				subject string
				allowed bool
			}{
				{"allowed", authz.User("usr_042_3"), true},
				{"denied", authz.User("usr_017_3"), false},
			}
			ds := authz.Dataset("ds_042_7")
			ctx := context.Background()
			for _, c := range cases {
				check := func(b *testing.B) {
					ok, err := s.Check(ctx, c.subject, authz.CanEdit, ds)
					if err != nil || ok != c.allowed {
						b.Fatalf("Check = %v, %v; want %v", ok, err, c.allowed)
					}
				}
				// Steady state: the answer is remembered from the last check.
				b.Run(c.name, func(b *testing.B) {
					for b.Loop() {
						check(b)
					}
				})
				// The first check after a write, on this replica or another:
				// OpenFGA resolves it.
				b.Run(c.name+"_after_write", func(b *testing.B) {
					other := authz.NewTuple(authz.User("usr_other"), authz.Viewer, authz.Workspace("ws_999"))
					for i := 0; b.Loop(); i++ {
						b.StopTimer()
						var err error
						if i%2 == 0 {
							err = s.Write(ctx, []authz.Tuple{other}, nil)
						} else {
							err = s.Write(ctx, nil, []authz.Tuple{other})
						}
						if err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
						check(b)
					}
				})
			}
		})
	}
}
