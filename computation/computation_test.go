package computation_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computation/computationtest"
	"github.com/covecompute/cove/scheduler"
	"github.com/covecompute/cove/workspace"
)

func wantCode(tb testing.TB, err error, code cove.Code) {
	tb.Helper()
	if got := cove.ErrorCode(err); got != code {
		tb.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

// world is the cast of a computation: an owner in workspace A, an
// algorithm published by workspace P, a dataset of workspace D whose admin
// provides it, a result consumer, a viewer of A and an outsider.
type world struct {
	*computationtest.Env
	owner, viewer, algDev, dataAdmin, dataMember, consumer, outsider computationtest.User
	wsA, wsP, wsD                                                    string
	alg                                                              *catalog.Algorithm
	ds                                                               *catalog.Dataset
	key                                                              string // the consumer's age recipient
}

var allowAll = catalog.Policy{AllowAnyAlgorithm: true}

func newWorld(t *testing.T, e *computationtest.Env) *world {
	t.Helper()
	w := &world{Env: e}
	w.owner, w.viewer, w.algDev = e.User(t, "owner@x.io"), e.User(t, "viewer@x.io"), e.User(t, "alg@x.io")
	w.dataAdmin, w.dataMember = e.User(t, "dadmin@x.io"), e.User(t, "dmember@x.io")
	w.consumer, w.outsider = e.User(t, "consumer@x.io"), e.User(t, "outsider@x.io")
	w.wsA = e.NewWorkspace(t, w.owner.Principal, "A")
	e.Join(t, w.owner.Principal, w.wsA, w.viewer.Principal, workspace.Viewer)
	w.wsP = e.NewWorkspace(t, w.algDev.Principal, "P")
	w.wsD = e.NewWorkspace(t, w.dataAdmin.Principal, "D")
	e.Join(t, w.dataAdmin.Principal, w.wsD, w.dataMember.Principal, workspace.Member)
	e.NewWorkspace(t, w.outsider.Principal, "O")
	w.alg = e.AddAlgorithm(w.wsP, catalog.KindWasm)
	w.ds = e.AddDataset(w.wsD, allowAll)
	w.key = computationtest.Key(t).Recipient().String()
	return w
}

// spec is a valid spec of w's algorithm over datasets (w.ds by default)
// for w's consumer.
func (w *world) spec(datasets ...*catalog.Dataset) computation.Spec {
	if len(datasets) == 0 {
		datasets = []*catalog.Dataset{w.ds}
	}
	return computationtest.Spec(w.alg, datasets, computation.ResultConsumer{UserID: w.consumer.UserID, Recipient: w.key})
}

func (w *world) create(t *testing.T, spec computation.Spec) *computation.Computation {
	t.Helper()
	c, err := w.Service.Create(context.Background(), w.owner.Principal, w.wsA, spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return c
}

func (w *world) start(t *testing.T, id string) *computation.Run {
	t.Helper()
	r, err := w.Service.StartRun(context.Background(), w.owner.Principal, id)
	if err != nil {
		t.Fatalf("start run: %v", err)
	}
	return r
}

func TestCreateAndManifest(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		ctx := context.Background()
		w := newWorld(t, e)
		tee := e.AddDataset(w.wsD, catalog.Policy{AllowAnyAlgorithm: true, RequiredTEE: catalog.TEESEVSNP, MaxDurationSeconds: 600})
		spec := w.spec(w.ds, tee)
		spec.Args = []string{"--rows", "10"}
		spec.Limits = computation.Limits{MemoryBytes: 256 << 20}
		c := w.create(t, spec)

		if c.Name != w.alg.Name || c.Frozen || c.AlgorithmWorkspaceID != w.wsP || c.Datasets[1].WorkspaceID != w.wsD {
			t.Fatalf("created %+v", c)
		}
		m := c.Manifest
		if m.RequiredTEE != string(catalog.TEESEVSNP) || m.Limits.MaxDurationSeconds != 600 || m.Limits.CPUs != computation.DefaultCPUs || m.Limits.MemoryBytes != 256<<20 {
			t.Fatalf("manifest does not carry the strictest policy: %+v", m)
		}
		if got := strings.Join(m.Algorithm.Args, " "); got != "--entry --rows 10" {
			t.Fatalf("manifest args %q, want the algorithm's then the computation's", got)
		}
		// Anyone can recompute the digest from the manifest's JSON.
		sum := sha256.Sum256(c.Canonical)
		if hex.EncodeToString(sum[:]) != c.ManifestSHA256 {
			t.Fatal("the manifest digest is not the SHA-256 of its canonical bytes")
		}
		if again, err := jcs.Transform(c.Canonical); err != nil || string(again) != string(c.Canonical) {
			t.Fatalf("the stored manifest is not canonical: %v", err)
		}

		// Every participant sees the same manifest; strangers see nothing.
		for _, u := range []computationtest.User{w.owner, w.viewer, w.algDev, w.dataAdmin, w.consumer} {
			got, err := e.Service.Get(ctx, u.Principal, c.ID)
			if err != nil {
				t.Fatalf("%s: get: %v", u.Email, err)
			}
			if got.ManifestSHA256 != c.ManifestSHA256 || string(got.Canonical) != string(c.Canonical) {
				t.Fatalf("%s sees another manifest", u.Email)
			}
		}
		for _, u := range []computationtest.User{w.outsider, w.dataMember} {
			_, err := e.Service.Get(ctx, u.Principal, c.ID)
			wantCode(t, err, cove.NotFound)
		}
		_, err := e.Service.Get(ctx, w.owner.Principal, "cmp_nope")
		wantCode(t, err, cove.NotFound)

		// Lists: the owner's workspace, and what each participates in.
		other := w.create(t, w.spec())
		for _, c := range []struct {
			who  computationtest.User
			ws   string
			want int
			code cove.Code
		}{
			{w.owner, "", 2, ""}, {w.owner, w.wsA, 2, ""}, {w.viewer, "", 2, ""}, {w.consumer, "", 2, ""},
			{w.dataAdmin, "", 2, ""}, {w.dataAdmin, w.wsD, 0, ""}, {w.outsider, "", 0, ""}, {w.outsider, w.wsA, 0, cove.NotFound},
		} {
			got, err := e.Service.List(ctx, c.who.Principal, c.ws, cove.Page{})
			wantCode(t, err, c.code)
			if err == nil && len(got) != c.want {
				t.Fatalf("%s lists %d computations in %q, want %d", c.who.Email, len(got), c.ws, c.want)
			}
		}
		page1, err := e.Service.List(ctx, w.owner.Principal, "", cove.Page{Limit: 1})
		if err != nil || len(page1) != 1 || page1[0].ID != c.ID {
			t.Fatalf("first page: %v %v", page1, err)
		}
		page2, err := e.Service.List(ctx, w.owner.Principal, "", cove.Page{Limit: 1, After: page1[0].ID})
		if err != nil || len(page2) != 1 || page2[0].ID != other.ID {
			t.Fatalf("second page: %v %v", page2, err)
		}
	})
}

func TestCreateValidation(t *testing.T) {
	e := computationtest.New(t, "sqlite")
	w := newWorld(t, e)
	ctx := context.Background()
	incompatible := e.AddDataset(w.wsD, catalog.Policy{AllowAnyAlgorithm: true, RequiredTEE: catalog.TEETDX})
	sev := e.AddDataset(w.wsD, catalog.Policy{AllowAnyAlgorithm: true, RequiredTEE: catalog.TEESEVSNP})
	for _, c := range []struct {
		name  string
		edit  func(*computation.Spec)
		code  cove.Code
		field string
	}{
		{"no algorithm", func(s *computation.Spec) { s.AlgorithmID = "" }, cove.Invalid, "algorithm_id"},
		{"unknown algorithm", func(s *computation.Spec) { s.AlgorithmID = "alg_nope" }, cove.NotFound, "algorithm_id"},
		{"no dataset", func(s *computation.Spec) { s.Datasets = nil }, cove.Invalid, "datasets"},
		{"unknown dataset", func(s *computation.Spec) { s.Datasets[0].DatasetID = "ds_nope" }, cove.NotFound, "datasets[0].dataset_id"},
		{"bad directory name", func(s *computation.Spec) { s.Datasets[0].Name = "../etc" }, cove.Invalid, "datasets[0].name"},
		{"upper-case name", func(s *computation.Spec) { s.Datasets[0].Name = "Data" }, cove.Invalid, "datasets[0].name"},
		{"long name", func(s *computation.Spec) { s.Datasets[0].Name = strings.Repeat("a", 65) }, cove.Invalid, "datasets[0].name"},
		{"same name twice", func(s *computation.Spec) {
			s.Datasets = append(s.Datasets, computation.DatasetRef{Name: "d0", DatasetID: sev.ID})
		}, cove.Invalid, "datasets[1].name"},
		{"same dataset twice", func(s *computation.Spec) {
			s.Datasets = append(s.Datasets, computation.DatasetRef{Name: "again", DatasetID: w.ds.ID})
		}, cove.Invalid, "datasets[1].dataset_id"},
		{"bad recipient", func(s *computation.Spec) { s.ResultConsumers[0].Recipient = "age1notakey" }, cove.Invalid, "result_consumers[0].recipient"},
		{"ssh key is not an age key", func(s *computation.Spec) {
			s.ResultConsumers[0].Recipient = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
		}, cove.Invalid, "result_consumers[0].recipient"},
		{"not a user ID", func(s *computation.Spec) { s.ResultConsumers[0].UserID = "bob" }, cove.Invalid, "result_consumers[0].user_id"},
		{"unknown user", func(s *computation.Spec) { s.ResultConsumers[0].UserID = cove.NewID("usr") }, cove.Invalid, "result_consumers"},
		{"consumer twice", func(s *computation.Spec) { s.ResultConsumers = append(s.ResultConsumers, s.ResultConsumers[0]) }, cove.Invalid, "result_consumers[1].user_id"},
		{"too many cpus", func(s *computation.Spec) { s.Limits.CPUs = 1000 }, cove.Invalid, "limits.cpus"},
		{"too little memory", func(s *computation.Spec) { s.Limits.MemoryBytes = 1024 }, cove.Invalid, "limits.memory_bytes"},
		{"negative disk", func(s *computation.Spec) { s.Limits.DiskBytes = -1 }, cove.Invalid, "limits.disk_bytes"},
		{"a month", func(s *computation.Spec) { s.Limits.MaxDurationSeconds = 30 * 86400 }, cove.Invalid, "limits.max_duration_seconds"},
		{"bad label", func(s *computation.Spec) { s.Labels = map[string]string{"bad key!": "x"} }, cove.Invalid, "labels"},
		{"NUL in an argument", func(s *computation.Spec) { s.Args = []string{"a\x00b"} }, cove.Invalid, "args[0]"},
		{"control characters in the name", func(s *computation.Spec) { s.Name = "a\nb" }, cove.Invalid, "name"},
		{"incompatible TEEs", func(s *computation.Spec) {
			s.Datasets = []computation.DatasetRef{{Name: "a", DatasetID: incompatible.ID}, {Name: "b", DatasetID: sev.ID}}
		}, cove.Invalid, "datasets[1]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := w.spec()
			c.edit(&s)
			_, err := e.Service.Create(ctx, w.owner.Principal, w.wsA, s)
			wantCode(t, err, c.code)
			found := false
			for _, d := range cove.ErrorDetails(err) {
				found = found || d.Field == c.field
			}
			if !found {
				t.Fatalf("details %+v name no %q", cove.ErrorDetails(err), c.field)
			}
		})
	}
	// Several mistakes are reported together.
	s := w.spec()
	s.Datasets[0].Name, s.Limits.CPUs, s.ResultConsumers[0].Recipient = "BAD", -1, "nope"
	_, err := e.Service.Create(ctx, w.owner.Principal, w.wsA, s)
	if len(cove.ErrorDetails(err)) != 3 {
		t.Fatalf("details %+v, want all 3 problems", cove.ErrorDetails(err))
	}
	// Only writers of the workspace create in it.
	_, err = e.Service.Create(ctx, w.viewer.Principal, w.wsA, w.spec())
	wantCode(t, err, cove.Forbidden)
	_, err = e.Service.Create(ctx, w.outsider.Principal, w.wsA, w.spec())
	wantCode(t, err, cove.NotFound)
	// A consumer without a key yet is allowed; the dry run reports it.
	s = w.spec()
	s.ResultConsumers[0].Recipient = ""
	if _, err := e.Service.Create(ctx, w.owner.Principal, w.wsA, s); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateAndDelete(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		ctx := context.Background()
		w := newWorld(t, e)
		gated := e.AddDataset(w.wsD, catalog.Policy{AllowAnyAlgorithm: true, ApprovalRequired: true})
		c := w.create(t, w.spec(gated))
		if _, err := e.Service.Approve(ctx, w.dataAdmin.Principal, c.ID, computation.Decision{}); err != nil {
			t.Fatal(err)
		}

		// Who may edit.
		_, err := e.Service.Update(ctx, w.viewer.Principal, c.ID, w.spec(gated))
		wantCode(t, err, cove.Forbidden)
		_, err = e.Service.Update(ctx, w.consumer.Principal, c.ID, w.spec(gated))
		wantCode(t, err, cove.Forbidden)
		_, err = e.Service.Update(ctx, w.outsider.Principal, c.ID, w.spec(gated))
		wantCode(t, err, cove.NotFound)

		// The same definition keeps the manifest and so the approval.
		same, err := e.Service.Update(ctx, w.owner.Principal, c.ID, w.spec(gated))
		if err != nil || same.ManifestSHA256 != c.ManifestSHA256 || len(same.Approvals) != 1 {
			t.Fatalf("same update: %+v %v", same, err)
		}
		// A new definition is a new manifest: the approval was for the old one.
		spec := w.spec(gated)
		spec.Name, spec.Limits.CPUs = "renamed", 2
		up, err := e.Service.Update(ctx, w.owner.Principal, c.ID, spec)
		if err != nil {
			t.Fatal(err)
		}
		if up.Name != "renamed" || up.ManifestSHA256 == c.ManifestSHA256 || len(up.Approvals) != 0 {
			t.Fatalf("update: %+v", up)
		}
		// Swapping the dataset moves the provider relation with it.
		other := e.AddDataset(w.wsA, allowAll)
		if _, err := e.Service.Update(ctx, w.owner.Principal, c.ID, w.spec(other)); err != nil {
			t.Fatal(err)
		}
		_, err = e.Service.Get(ctx, w.dataAdmin.Principal, c.ID)
		wantCode(t, err, cove.NotFound)

		// The first run freezes it.
		run := w.start(t, c.ID)
		_, err = e.Service.Update(ctx, w.owner.Principal, c.ID, w.spec())
		wantCode(t, err, cove.Conflict)
		if got, _ := e.Service.Get(ctx, w.owner.Principal, c.ID); !got.Frozen {
			t.Fatal("a computation that ran is not frozen")
		}

		// Not deleted while a run is active.
		err = e.Service.Delete(ctx, w.viewer.Principal, c.ID)
		wantCode(t, err, cove.Forbidden)
		err = e.Service.Delete(ctx, w.owner.Principal, c.ID)
		wantCode(t, err, cove.Conflict)
		if n, err := e.Service.CountActiveRuns(ctx, w.wsA); err != nil || n != 1 {
			t.Fatalf("active runs of A: %d %v", n, err)
		}
		if _, err := e.Service.Get(ctx, w.consumer.Principal, c.ID); err != nil {
			t.Fatalf("a refused delete took the consumer's access: %v", err)
		}
		if _, err := e.Service.Stop(ctx, w.owner.Principal, run.ID); err != nil {
			t.Fatal(err)
		}
		if err := e.Service.Delete(ctx, w.owner.Principal, c.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.Service.Get(ctx, w.owner.Principal, c.ID)
		wantCode(t, err, cove.NotFound)
		_, err = e.Service.GetRun(ctx, w.owner.Principal, run.ID)
		wantCode(t, err, cove.NotFound)
	})
}

func TestPolicy(t *testing.T) {
	e := computationtest.New(t, "sqlite")
	w := newWorld(t, e)
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		policy  catalog.Policy
		network bool
		want    []string // substrings of the policy blockers, in order
	}{
		{"zero policy allows nothing", catalog.Policy{}, false, []string{"does not allow algorithm"}},
		{"any algorithm", catalog.Policy{AllowAnyAlgorithm: true}, false, nil},
		{"allowed digest", catalog.Policy{AllowedAlgorithms: []string{w.alg.SHA256}}, false, nil},
		{"other digest", catalog.Policy{AllowedAlgorithms: []string{strings.Repeat("0", 64)}}, false, []string{"does not allow algorithm"}},
		{"allowed publisher", catalog.Policy{AllowedPublishers: []string{w.wsP}}, false, nil},
		{"other publisher", catalog.Policy{AllowedPublishers: []string{w.wsD}}, false, []string{"does not allow algorithm"}},
		{"network denied", catalog.Policy{AllowAnyAlgorithm: true}, true, []string{"network"}},
		{"network allowed", catalog.Policy{AllowAnyAlgorithm: true, AllowNetwork: true}, true, nil},
		{"denied twice over", catalog.Policy{AllowedPublishers: []string{w.wsA}}, true, []string{"does not allow algorithm", "network"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds := e.AddDataset(w.wsD, c.policy)
			s := w.spec(ds)
			s.Network = c.network
			comp := w.create(t, s)
			dry, err := e.Service.DryRun(ctx, w.owner.Principal, comp.ID)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range dry.Blockers {
				if b.Kind != computation.BlockPolicy || b.DatasetID != ds.ID {
					t.Fatalf("unexpected blocker %+v", b)
				}
				got = append(got, b.Message)
			}
			if len(got) != len(c.want) || dry.Runnable != (len(c.want) == 0) {
				t.Fatalf("blockers %q, want %d matching %q", got, len(c.want), c.want)
			}
			for i, want := range c.want {
				if !strings.Contains(got[i], want) {
					t.Fatalf("blocker %q does not say %q", got[i], want)
				}
			}
			_, err = e.Service.StartRun(ctx, w.owner.Principal, comp.ID)
			if len(c.want) > 0 {
				wantCode(t, err, cove.Forbidden)
				if len(cove.ErrorDetails(err)) != len(c.want) {
					t.Fatalf("run refused with details %+v", cove.ErrorDetails(err))
				}
			} else if err != nil {
				t.Fatal(err)
			}
		})
	}

	// Policies are read at run time: tightening one after creation blocks.
	t.Run("policy tightened later", func(t *testing.T) {
		ds := e.AddDataset(w.wsD, allowAll)
		comp := w.create(t, w.spec(ds))
		e.SetPolicy(ds.ID, catalog.Policy{AllowAnyAlgorithm: true, RequiredTEE: catalog.TEETDX, MaxDurationSeconds: 60})
		dry, err := e.Service.DryRun(ctx, w.owner.Principal, comp.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(dry.Blockers) != 2 || !strings.Contains(dry.Blockers[0].Message, "requires TEE tdx") || !strings.Contains(dry.Blockers[1].Message, "caps runs at 60 s") {
			t.Fatalf("blockers %+v", dry.Blockers)
		}
	})
}

func TestDryRunListsEveryBlocker(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		ctx := context.Background()
		w := newWorld(t, e)
		denies := e.AddDataset(w.wsD, catalog.Policy{AllowedPublishers: []string{w.wsD}})
		gated := e.AddDataset(w.wsD, catalog.Policy{AllowAnyAlgorithm: true, ApprovalRequired: true})
		spec := w.spec(denies, gated)
		spec.ResultConsumers[0].Recipient = "" // no key yet
		spec.Labels = map[string]string{"gpu": "a100"}
		c := w.create(t, spec)
		var asked scheduler.Request
		e.Scheduler.BlockersFunc = func(r scheduler.Request) []string {
			asked = r
			return []string{"no node has the labels gpu=a100"}
		}

		// The viewer may look but not run: every blocker comes at once.
		dry, err := e.Service.DryRun(ctx, w.viewer.Principal, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]string{}
		for _, b := range dry.Blockers {
			kinds[b.Kind] += b.DatasetID + b.UserID + ";"
		}
		want := map[string]string{
			computation.BlockPermission: ";",
			computation.BlockPolicy:     denies.ID + ";",
			computation.BlockApproval:   gated.ID + ";",
			computation.BlockConsumer:   w.consumer.UserID + ";",
			computation.BlockPlacement:  ";",
		}
		if dry.Runnable || len(dry.Blockers) != len(want) {
			t.Fatalf("blockers %+v, want one of each of %v", dry.Blockers, want)
		}
		for k, v := range want {
			if kinds[k] != v {
				t.Fatalf("blockers of kind %s: %q, want %q (all: %+v)", k, kinds[k], v, dry.Blockers)
			}
		}
		if asked.RunID == "" || asked.Driver != "wasm" || asked.TEE != "none" || asked.Labels["gpu"] != "a100" || asked.Resources.CPUs != computation.DefaultCPUs {
			t.Fatalf("the scheduler was asked %+v", asked)
		}

		// The owner may run; the rest still block, and the refusal lists
		// them all.
		_, err = e.Service.StartRun(ctx, w.owner.Principal, c.ID)
		wantCode(t, err, cove.Forbidden)
		if len(cove.ErrorDetails(err)) != len(want)-1 {
			t.Fatalf("run refused with %+v", cove.ErrorDetails(err))
		}
		// Nobody outside sees a thing.
		_, err = e.Service.DryRun(ctx, w.outsider.Principal, c.ID)
		wantCode(t, err, cove.NotFound)
		_, err = e.Service.StartRun(ctx, w.viewer.Principal, c.ID)
		wantCode(t, err, cove.Forbidden)

		// A computation whose only problems are its own is Invalid.
		e.Scheduler.BlockersFunc = func(scheduler.Request) []string { return nil }
		s := w.spec()
		s.ResultConsumers = nil
		lonely := w.create(t, s)
		_, err = e.Service.StartRun(ctx, w.owner.Principal, lonely.ID)
		wantCode(t, err, cove.Invalid)

		// A catalog entry that disappears blocks too.
		gone := e.AddDataset(w.wsD, allowAll)
		c2 := w.create(t, w.spec(gone))
		orig := e.Catalog.UseDatasetFunc
		e.Catalog.UseDatasetFunc = func(ctx context.Context, p cove.Principal, id string) (*catalog.Dataset, error) {
			if id == gone.ID {
				return nil, cove.Errorf(cove.NotFound, "dataset %s not found", id)
			}
			return orig(ctx, p, id)
		}
		dry, err = e.Service.DryRun(ctx, w.owner.Principal, c2.ID)
		if err != nil || len(dry.Blockers) != 1 || dry.Blockers[0].Kind != computation.BlockCatalog {
			t.Fatalf("gone dataset: %+v %v", dry, err)
		}
		e.Catalog.UseDatasetFunc = orig
	})
}

func TestApprovalFlow(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		ctx := context.Background()
		w := newWorld(t, e)
		gated := e.AddDataset(w.wsD, catalog.Policy{AllowAnyAlgorithm: true, ApprovalRequired: true})
		own := e.AddDataset(w.wsA, allowAll) // the owner's own, no approval needed
		c := w.create(t, w.spec(gated, own))

		_, err := e.Service.StartRun(ctx, w.owner.Principal, c.ID)
		wantCode(t, err, cove.Forbidden)

		// Only the dataset's providers decide.
		for _, c2 := range []struct {
			who  computationtest.User
			d    computation.Decision
			code cove.Code
		}{
			{w.outsider, computation.Decision{}, cove.NotFound},
			{w.dataMember, computation.Decision{}, cove.NotFound}, // not a provider: admins are
			{w.consumer, computation.Decision{}, cove.Forbidden},
			{w.algDev, computation.Decision{}, cove.Forbidden},
			{w.owner, computation.Decision{DatasetID: gated.ID}, cove.Forbidden}, // the owner provides only its own
			{w.dataAdmin, computation.Decision{DatasetID: own.ID}, cove.Forbidden},
			{w.dataAdmin, computation.Decision{DatasetID: "ds_nope"}, cove.NotFound},
			{w.dataAdmin, computation.Decision{Comment: strings.Repeat("x", 501)}, cove.Invalid},
		} {
			_, err := e.Service.Approve(ctx, c2.who.Principal, c.ID, c2.d)
			wantCode(t, err, c2.code)
		}

		// A rejection blocks with its comment.
		got, err := e.Service.Reject(ctx, w.dataAdmin.Principal, c.ID, computation.Decision{Comment: "not this quarter"})
		if err != nil || len(got.Approvals) != 1 || got.Approvals[0].Decision != computation.Rejected || got.Approvals[0].DatasetID != gated.ID {
			t.Fatalf("reject: %+v %v", got, err)
		}
		dry, _ := e.Service.DryRun(ctx, w.owner.Principal, c.ID)
		if len(dry.Blockers) != 1 || !strings.Contains(dry.Blockers[0].Message, "not this quarter") {
			t.Fatalf("after rejection: %+v", dry.Blockers)
		}
		// An approval replaces it and lets the run go.
		got, err = e.Service.Approve(ctx, w.dataAdmin.Principal, c.ID, computation.Decision{DatasetID: gated.ID})
		if err != nil || len(got.Approvals) != 1 || got.Approvals[0].Decision != computation.Approved || got.Approvals[0].UserID != w.dataAdmin.UserID || got.Approvals[0].ManifestSHA256 != c.ManifestSHA256 {
			t.Fatalf("approve: %+v %v", got, err)
		}
		run := w.start(t, c.ID)
		if run.State != computation.Queued || run.ManifestSHA256 != c.ManifestSHA256 {
			t.Fatalf("run %+v", run)
		}
		// Rejecting later blocks the next run, not the one going.
		if _, err := e.Service.Reject(ctx, w.dataAdmin.Principal, c.ID, computation.Decision{}); err != nil {
			t.Fatal(err)
		}
		_, err = e.Service.StartRun(ctx, w.owner.Principal, c.ID)
		wantCode(t, err, cove.Forbidden)
		if r, _ := e.Service.GetRun(ctx, w.owner.Principal, run.ID); r.State != computation.Queued {
			t.Fatalf("the going run is %s", r.State)
		}
	})
}

func TestRunsAndResults(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		ctx := context.Background()
		w := newWorld(t, e)
		s := w.spec()
		s.Labels = map[string]string{"zone": "eu"}
		s.Limits = computation.Limits{CPUs: 2, MemoryBytes: 1 << 30, DiskBytes: 2 << 30, MaxDurationSeconds: 60}
		c := w.create(t, s)
		run := w.start(t, c.ID)

		// Queued and handed to the scheduler with what the node needs.
		reqs := e.Enqueued()
		if len(reqs) != 1 {
			t.Fatalf("enqueued %+v", reqs)
		}
		r := reqs[0]
		if r.RunID != run.ID || r.WorkspaceID != w.wsA || r.Driver != "wasm" || r.TEE != "none" || r.Labels["zone"] != "eu" ||
			r.Resources.CPUs != 2 || r.Resources.MemoryBytes != 1<<30 || r.Resources.DiskBytes != 2<<30 ||
			!r.QueueDeadline.Equal(run.CreatedAt.Add(computation.DefaultQueueTimeout)) {
			t.Fatalf("request %+v for run %+v", r, run)
		}
		if again, err := e.Service.RunRequest(ctx, run); err != nil || again.RunID != run.ID || again.Driver != r.Driver || !again.QueueDeadline.Equal(r.QueueDeadline) {
			t.Fatalf("rebuilt request %+v %v", again, err)
		}
		canon, sum, m, err := e.Service.Manifest(ctx, run.ID)
		if err != nil || sum != c.ManifestSHA256 || string(canon) != string(c.Canonical) || m.ComputationID != c.ID {
			t.Fatalf("manifest of the run: %s %v", sum, err)
		}

		// Who sees runs.
		for _, u := range []computationtest.User{w.owner, w.viewer, w.consumer, w.dataAdmin, w.algDev} {
			if _, err := e.Service.GetRun(ctx, u.Principal, run.ID); err != nil {
				t.Fatalf("%s: %v", u.Email, err)
			}
		}
		_, err = e.Service.GetRun(ctx, w.outsider.Principal, run.ID)
		wantCode(t, err, cove.NotFound)
		runs, err := e.Service.ListRuns(ctx, w.viewer.Principal, c.ID, cove.Page{})
		if err != nil || len(runs) != 1 {
			t.Fatalf("runs: %v %v", runs, err)
		}

		// No result yet.
		_, _, _, err = e.Service.Result(ctx, w.consumer.Principal, run.ID, e.Results)
		wantCode(t, err, cove.Conflict)
		// The run goes all the way.
		sealed := []byte("age-encryption.org/v1 sealed result")
		sha := e.PutResult(sealed)
		node := "nod_1"
		for _, st := range []computation.State{computation.Scheduled, computation.Provisioning, computation.Attesting, computation.Receiving, computation.Running, computation.Publishing} {
			if _, err := e.Service.Advance(ctx, run.ID, st, computation.RunUpdate{NodeID: node}); err != nil {
				t.Fatalf("advance to %s: %v", st, err)
			}
		}
		if active, err := e.Service.FindRunsOnNode(ctx, node); err != nil || len(active) != 1 {
			t.Fatalf("runs on the node: %v %v", active, err)
		}
		zero := 0
		done, err := e.Service.Advance(ctx, run.ID, computation.Succeeded, computation.RunUpdate{ExitCode: &zero, CPUSeconds: 1.5, PeakMemory: 1 << 20, ResultSHA256: sha, ResultSize: int64(len(sealed))})
		if err != nil || done.ResultSHA256 != sha || *done.ExitCode != 0 || done.FinishedAt == nil || done.StartedAt == nil {
			t.Fatalf("succeeded: %+v %v", done, err)
		}
		if active, _ := e.Service.FindActiveRuns(ctx); len(active) != 0 {
			t.Fatalf("active runs after the end: %v", active)
		}

		// Only result consumers fetch results.
		rc, n, _, err := e.Service.Result(ctx, w.consumer.Principal, run.ID, e.Results)
		if err != nil || n != int64(len(sealed)) {
			t.Fatalf("consumer: %v", err)
		}
		rc.Close()
		for _, u := range []computationtest.User{w.owner, w.viewer, w.dataAdmin, w.algDev} {
			_, _, _, err := e.Service.Result(ctx, u.Principal, run.ID, e.Results)
			wantCode(t, err, cove.Forbidden)
		}
		_, _, _, err = e.Service.Result(ctx, w.outsider.Principal, run.ID, e.Results)
		wantCode(t, err, cove.NotFound)

		// History.
		events, err := e.Service.RunEvents(ctx, w.consumer.Principal, run.ID)
		if err != nil || len(events) != 8 || events[0].State != computation.Queued || events[7].State != computation.Succeeded || events[7].Seq != 8 {
			t.Fatalf("events %+v %v", events, err)
		}

		// Restart makes a new run; an active run cannot be restarted.
		again, err := e.Service.Restart(ctx, w.owner.Principal, run.ID)
		if err != nil || again.ID == run.ID || again.ComputationID != c.ID {
			t.Fatalf("restart: %+v %v", again, err)
		}
		_, err = e.Service.Restart(ctx, w.owner.Principal, again.ID)
		wantCode(t, err, cove.Conflict)
		_, err = e.Service.Restart(ctx, w.viewer.Principal, run.ID)
		wantCode(t, err, cove.Forbidden)

		// Stops: queued at once, placed ones through the node.
		_, err = e.Service.Stop(ctx, w.viewer.Principal, again.ID)
		wantCode(t, err, cove.Forbidden)
		stopped, err := e.Service.Stop(ctx, w.owner.Principal, again.ID)
		if err != nil || stopped.State != computation.Stopped || stopped.Reason != computation.StoppedByUser || !strings.Contains(stopped.Message, w.owner.Email) {
			t.Fatalf("stop: %+v %v", stopped, err)
		}
		if len(e.Stopped()) != 0 {
			t.Fatalf("a queued run was stopped on a node: %v", e.Stopped())
		}
		if rel := e.Released(); len(rel) != 2 || rel[1] != again.ID {
			t.Fatalf("released %v", rel)
		}
		if s2, err := e.Service.Stop(ctx, w.owner.Principal, again.ID); err != nil || s2.State != computation.Stopped {
			t.Fatalf("stopping again: %v", err)
		}
		_, err = e.Service.Stop(ctx, w.owner.Principal, run.ID)
		wantCode(t, err, cove.Conflict)

		third, _ := e.Service.Restart(ctx, w.owner.Principal, again.ID)
		if _, err := e.Service.Advance(ctx, third.ID, computation.Scheduled, computation.RunUpdate{NodeID: node}); err != nil {
			t.Fatal(err)
		}
		e.Stopper.StopRunFunc = func(context.Context, *computation.Run) error {
			return cove.Errorf(cove.Unavailable, "node unreachable")
		}
		stopped, err = e.Service.Stop(ctx, w.owner.Principal, third.ID)
		if err != nil || stopped.State != computation.Stopped || !strings.Contains(stopped.Message, "reconnects") {
			t.Fatalf("stop with the node away: %+v %v", stopped, err)
		}

		// A scheduler that cannot take the run fails it.
		e.Scheduler.EnqueueFunc = func(context.Context, scheduler.Request) error {
			return cove.Errorf(cove.Unavailable, "the scheduler is busy")
		}
		_, err = e.Service.StartRun(ctx, w.owner.Principal, c.ID)
		wantCode(t, err, cove.Unavailable)
		all, _ := e.Service.ListRuns(ctx, w.owner.Principal, c.ID, cove.Page{})
		if last := all[len(all)-1]; last.State != computation.Failed || last.Reason != computation.Internal {
			t.Fatalf("the unqueued run is %s/%s", last.State, last.Reason)
		}
		if n, _ := e.Service.CountActiveRuns(ctx, w.wsA); n != 0 {
			t.Fatalf("%d active runs", n)
		}
	})
}
