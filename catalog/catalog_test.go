package catalog_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sqlstore"
	"github.com/covecompute/cove/workspace"
)

// wasm is the smallest WebAssembly module: the magic and version 1.
var wasm = []byte("\x00asm\x01\x00\x00\x00")

func wantCode(tb testing.TB, err error, code cove.Code) {
	tb.Helper()
	if got := cove.ErrorCode(err); got != code {
		tb.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func must[T any](tb testing.TB) func(T, error) T {
	return func(v T, err error) T {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return v
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
func join(tb testing.TB, m *app.Main, owner cove.Principal, ws string, p cove.Principal, role workspace.Role) {
	tb.Helper()
	ctx := context.Background()
	inv, err := m.Workspace.Invite(ctx, owner, ws, p.Email, role)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := m.Workspace.Accept(ctx, p, inv.Token); err != nil {
		tb.Fatal(err)
	}
}

func newWorkspace(tb testing.TB, m *app.Main, owner cove.Principal, name string) string {
	tb.Helper()
	w, err := m.Workspace.Create(context.Background(), owner, name)
	if err != nil {
		tb.Fatal(err)
	}
	return w.ID
}

func forEngine(t *testing.T, f func(t *testing.T, m *app.Main)) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) { f(t, apptest.StartEngine(t, e)) })
	}
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// stored returns the digests in the blob store, and fails the test if an
// upload left a temporary file behind.
func stored(tb testing.TB, m *app.Main) []string {
	tb.Helper()
	var sums []string
	if err := m.Blobs.Walk(context.Background(), func(i blob.Info) error {
		sums = append(sums, i.SHA256)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	tmp, err := os.ReadDir(filepath.Join(m.Config.DataDir, "blobs", "tmp"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(tmp) > 0 {
		tb.Fatalf("temporary blob files left behind: %v", tmp)
	}
	return sums
}

func fileUpload(name string) catalog.DatasetUpload {
	return catalog.DatasetUpload{Name: name, FileName: name + ".csv"}
}

func TestVisibilityMatrix(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		s := m.Catalog
		ownerA, viewerA, ownerB, ownerC := user(t, m, "oa@x.io"), user(t, m, "va@x.io"), user(t, m, "ob@x.io"), user(t, m, "oc@x.io")
		wsA, wsB, wsC := newWorkspace(t, m, ownerA, "A"), newWorkspace(t, m, ownerB, "B"), newWorkspace(t, m, ownerC, "C")
		join(t, m, ownerA, wsA, viewerA, workspace.Viewer)

		hostile := `Robert'); DROP TABLE datasets;-- <script>alert(1)</script> 100%_`
		pub := must[*catalog.Dataset](t)(s.CreateDataset(ctx, ownerA, wsA, catalog.DatasetUpload{Name: hostile, FileName: "pub.csv", Visibility: catalog.Public}, strings.NewReader("a,b\n1,2\n")))
		priv := must[*catalog.Dataset](t)(s.CreateDataset(ctx, ownerA, wsA, fileUpload("private"), strings.NewReader("secret")))
		restr := must[*catalog.Dataset](t)(s.CreateDataset(ctx, ownerA, wsA, catalog.DatasetUpload{Name: "restricted", FileName: "r.csv", Visibility: catalog.Restricted, SharedWith: []string{wsB}}, strings.NewReader("shared")))
		alg := must[*catalog.Algorithm](t)(s.CreateAlgorithm(ctx, ownerA, wsA, catalog.AlgorithmUpload{Name: "restricted alg", Kind: catalog.KindWasm, FileName: "a.wasm", Visibility: catalog.Restricted, SharedWith: []string{wsB}}, bytes.NewReader(wasm)))

		if pub.Name != hostile || priv.Visibility != catalog.Private || pub.SHA256 != digest([]byte("a,b\n1,2\n")) || pub.Size != 8 {
			t.Fatalf("created %+v", pub)
		}

		type who struct {
			name string
			p    cove.Principal
		}
		people := []who{{"owner A", ownerA}, {"viewer A", viewerA}, {"owner B", ownerB}, {"owner C", ownerC}}
		// What each person may do with each entry: "" for nothing
		// (not_found), "view" (can see, may not use: forbidden), "use".
		want := map[string]map[string]string{
			"owner A":  {pub.ID: "use", priv.ID: "use", restr.ID: "use", alg.ID: "use"},
			"viewer A": {pub.ID: "use", priv.ID: "view", restr.ID: "view", alg.ID: "view"},
			"owner B":  {pub.ID: "use", priv.ID: "", restr.ID: "use", alg.ID: "use"},
			"owner C":  {pub.ID: "use", priv.ID: "", restr.ID: "", alg.ID: ""},
		}
		for _, w := range people {
			for _, id := range []string{pub.ID, priv.ID, restr.ID, alg.ID} {
				exp := want[w.name][id]
				var getErr, useErr error
				if strings.HasPrefix(id, "alg_") {
					_, getErr = s.GetAlgorithm(ctx, w.p, id)
					_, useErr = s.UseAlgorithm(ctx, w.p, id)
				} else {
					_, getErr = s.GetDataset(ctx, w.p, id)
					_, useErr = s.UseDataset(ctx, w.p, id)
				}
				switch exp {
				case "":
					if cove.ErrorCode(getErr) != cove.NotFound || cove.ErrorCode(useErr) != cove.NotFound {
						t.Errorf("%s on %s: get %v, use %v; want not_found for both", w.name, id, getErr, useErr)
					}
				case "view":
					if getErr != nil || cove.ErrorCode(useErr) != cove.Forbidden {
						t.Errorf("%s on %s: get %v, use %v; want get ok, use forbidden", w.name, id, getErr, useErr)
					}
				case "use":
					if getErr != nil || useErr != nil {
						t.Errorf("%s on %s: get %v, use %v; want both ok", w.name, id, getErr, useErr)
					}
				}
			}
			// The list shows exactly what the person may see.
			ds := must[[]*catalog.Dataset](t)(s.ListDatasets(ctx, w.p, catalog.Filter{}, cove.Page{}))
			as := must[[]*catalog.Algorithm](t)(s.ListAlgorithms(ctx, w.p, catalog.Filter{}, cove.Page{}))
			var got, exp []string
			for _, d := range ds {
				got = append(got, d.ID)
			}
			for _, a := range as {
				got = append(got, a.ID)
			}
			for _, id := range []string{pub.ID, priv.ID, restr.ID, alg.ID} {
				if want[w.name][id] != "" {
					exp = append(exp, id)
				}
			}
			slices.Sort(got)
			slices.Sort(exp)
			if !slices.Equal(got, exp) {
				t.Errorf("%s lists %v, want %v", w.name, got, exp)
			}
		}

		// Who else an entry is shared with is shown only inside its workspace.
		if d := must[*catalog.Dataset](t)(s.GetDataset(ctx, viewerA, restr.ID)); !slices.Equal(d.SharedWith, []string{wsB}) {
			t.Errorf("viewer A sees shared_with %v", d.SharedWith)
		}
		if d := must[*catalog.Dataset](t)(s.GetDataset(ctx, ownerB, restr.ID)); len(d.SharedWith) != 0 || d.SharedWith == nil {
			t.Errorf("owner B sees shared_with %#v, want []", d.SharedWith)
		}
		for _, d := range must[[]*catalog.Dataset](t)(s.ListDatasets(ctx, ownerB, catalog.Filter{}, cove.Page{})) {
			if len(d.SharedWith) != 0 {
				t.Errorf("owner B lists %s with shared_with %v", d.ID, d.SharedWith)
			}
		}
		if got := must[*catalog.Dataset](t)(s.GetDataset(ctx, ownerC, pub.ID)); got.Name != hostile {
			t.Errorf("name not verbatim: %q", got.Name)
		}

		// Changing the visibility swaps who may see it.
		vis := func(v catalog.Visibility, shared ...string) catalog.DatasetUpdate {
			u := catalog.DatasetUpdate{Visibility: &v}
			if shared != nil {
				u.SharedWith = &shared
			}
			return u
		}
		visible := func(p cove.Principal, id string) bool {
			_, err := s.GetDataset(ctx, p, id)
			if err != nil && cove.ErrorCode(err) != cove.NotFound {
				t.Fatal(err)
			}
			return err == nil
		}
		_, err := s.UpdateDataset(ctx, viewerA, priv.ID, vis(catalog.Public))
		wantCode(t, err, cove.Forbidden)
		_, err = s.UpdateDataset(ctx, ownerC, priv.ID, vis(catalog.Public))
		wantCode(t, err, cove.NotFound)
		must[*catalog.Dataset](t)(s.UpdateDataset(ctx, ownerA, priv.ID, vis(catalog.Public)))
		if !visible(ownerC, priv.ID) || !visible(ownerB, priv.ID) {
			t.Fatal("public dataset not visible to others")
		}
		d := must[*catalog.Dataset](t)(s.UpdateDataset(ctx, ownerA, priv.ID, vis(catalog.Restricted, wsC, wsC)))
		if !slices.Equal(d.SharedWith, []string{wsC}) || visible(ownerB, priv.ID) || !visible(ownerC, priv.ID) {
			t.Fatalf("restricted to C: %+v, B sees %v, C sees %v", d, visible(ownerB, priv.ID), visible(ownerC, priv.ID))
		}
		// Restricted stays restricted, to a new list.
		d = must[*catalog.Dataset](t)(s.UpdateDataset(ctx, ownerA, priv.ID, catalog.DatasetUpdate{SharedWith: &[]string{wsB}}))
		if d.Visibility != catalog.Restricted || visible(ownerC, priv.ID) || !visible(ownerB, priv.ID) {
			t.Fatalf("restricted to B: %+v", d)
		}
		d = must[*catalog.Dataset](t)(s.UpdateDataset(ctx, ownerA, priv.ID, vis(catalog.Private)))
		if len(d.SharedWith) != 0 || visible(ownerB, priv.ID) || visible(ownerC, priv.ID) || !visible(viewerA, priv.ID) {
			t.Fatalf("private again: %+v", d)
		}
		for _, bad := range []catalog.DatasetUpdate{
			vis(catalog.Restricted),                       // no workspaces
			vis(catalog.Public, wsB),                      // shares without restricted
			vis("secret"),                                 // not a visibility
			vis(catalog.Restricted, "ws_nope"),            // not an ID
			vis(catalog.Restricted, cove.NewID("ws")),     // no such workspace
			{Name: new("")},                               // names are required
			{Description: new("tab\tok but bell \a not")}, // control characters
		} {
			_, err := s.UpdateDataset(ctx, ownerA, priv.ID, bad)
			wantCode(t, err, cove.Invalid)
		}
		if !visible(viewerA, priv.ID) || visible(ownerB, priv.ID) {
			t.Fatal("a refused update changed the visibility")
		}

		// Relations lost after a commit come back at start.
		if err := m.Authz.Revoke(ctx, authzReader(pub.ID)); err != nil {
			t.Fatal(err)
		}
		if visible(ownerC, pub.ID) {
			t.Fatal("revoked reader still sees")
		}
		if err := s.SyncRelations(ctx); err != nil {
			t.Fatal(err)
		}
		if !visible(ownerC, pub.ID) {
			t.Fatal("SyncRelations did not restore the public reader")
		}
	})
}

func TestListFiltersAndPages(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		s := m.Catalog
		a, b := user(t, m, "a@x.io"), user(t, m, "b@x.io")
		wsA, wsB := newWorkspace(t, m, a, "A"), newWorkspace(t, m, b, "B")
		var ids []string
		for i, name := range []string{"Genome 1", "genome_2", "Census", "100% genome", "private genome"} {
			up := fileUpload(name)
			if name != "private genome" {
				up.Visibility = catalog.Public
			}
			d := must[*catalog.Dataset](t)(s.CreateDataset(ctx, a, wsA, up, strings.NewReader(name+string(rune('0'+i)))))
			ids = append(ids, d.ID)
		}
		must[*catalog.Dataset](t)(s.CreateDataset(ctx, b, wsB, fileUpload("b's own"), strings.NewReader("b")))

		names := func(p cove.Principal, f catalog.Filter) []string {
			var out []string
			for _, d := range must[[]*catalog.Dataset](t)(s.ListDatasets(ctx, p, f, cove.Page{})) {
				out = append(out, d.Name)
			}
			return out
		}
		for _, c := range []struct {
			p    cove.Principal
			f    catalog.Filter
			want []string
		}{
			{b, catalog.Filter{Name: "GENOME"}, []string{"Genome 1", "genome_2", "100% genome"}},
			{a, catalog.Filter{Name: "genome"}, []string{"Genome 1", "genome_2", "100% genome", "private genome"}},
			{b, catalog.Filter{Name: "_"}, []string{"genome_2"}}, // LIKE wildcards are literal
			{b, catalog.Filter{Name: "%"}, []string{"100% genome"}},
			{b, catalog.Filter{WorkspaceID: wsB}, []string{"b's own"}},
			{b, catalog.Filter{WorkspaceID: wsA, Visibility: catalog.Private}, nil},
			{a, catalog.Filter{Visibility: catalog.Private}, []string{"private genome"}},
		} {
			if got := names(c.p, c.f); !slices.Equal(got, c.want) {
				t.Errorf("filter %+v: %v, want %v", c.f, got, c.want)
			}
		}
		_, err := s.ListDatasets(ctx, a, catalog.Filter{Visibility: "everyone"}, cove.Page{})
		wantCode(t, err, cove.Invalid)
		_, err = s.ListDatasets(ctx, a, catalog.Filter{Kind: catalog.KindWasm}, cove.Page{})
		wantCode(t, err, cove.Invalid)

		// Pages of two, in creation order, each entry once.
		var seen []string
		page := cove.Page{Limit: 2}
		for {
			ds := must[[]*catalog.Dataset](t)(s.ListDatasets(ctx, a, catalog.Filter{WorkspaceID: wsA}, page))
			for _, d := range ds {
				seen = append(seen, d.ID)
			}
			if len(ds) < page.Limit {
				break
			}
			page.After = ds[len(ds)-1].ID
		}
		if !slices.Equal(seen, ids) {
			t.Fatalf("pages gave %v, want %v", seen, ids)
		}

		// Algorithms filter by kind.
		must[*catalog.Algorithm](t)(s.CreateAlgorithm(ctx, a, wsA, catalog.AlgorithmUpload{Name: "w", Kind: catalog.KindWasm, FileName: "w.wasm"}, bytes.NewReader(wasm)))
		must[*catalog.Algorithm](t)(s.CreateAlgorithm(ctx, a, wsA, catalog.AlgorithmUpload{Name: "p", Kind: catalog.KindPython, FileName: "p.py", Args: []string{"--x", "ü"}}, strings.NewReader("print('ü')\n")))
		as := must[[]*catalog.Algorithm](t)(s.ListAlgorithms(ctx, a, catalog.Filter{Kind: catalog.KindPython}, cove.Page{}))
		if len(as) != 1 || as[0].Name != "p" || !slices.Equal(as[0].Args, []string{"--x", "ü"}) {
			t.Fatalf("python algorithms: %+v", as)
		}
	})
}

func TestPolicy(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	ws := cove.NewID("ws")
	tests := []struct {
		name  string
		p     catalog.Policy
		field string // the detail expected; "" for a valid policy
	}{
		{"zero", catalog.Policy{}, ""},
		{"full", catalog.Policy{AllowedAlgorithms: []string{hex64}, AllowedPublishers: []string{ws}, AllowAnyAlgorithm: true, AllowNetwork: true, RequiredTEE: catalog.TEESEVSNP, ApprovalRequired: true, MaxDurationSeconds: 600, PricePerRun: 5, PricePerCPUSecond: 1}, ""},
		{"every tee", catalog.Policy{RequiredTEE: catalog.TEETDX}, ""},
		{"upper-case digest", catalog.Policy{AllowedAlgorithms: []string{strings.ToUpper(hex64)}}, "allowed_algorithms"},
		{"short digest", catalog.Policy{AllowedAlgorithms: []string{hex64[:63]}}, "allowed_algorithms"},
		{"path digest", catalog.Policy{AllowedAlgorithms: []string{"../" + hex64[3:]}}, "allowed_algorithms"},
		{"publisher not an ID", catalog.Policy{AllowedPublishers: []string{"acme"}}, "allowed_publishers"},
		{"publisher a user", catalog.Policy{AllowedPublishers: []string{cove.NewID("usr")}}, "allowed_publishers"},
		{"unknown tee", catalog.Policy{RequiredTEE: "sgx"}, "required_tee"},
		{"negative duration", catalog.Policy{MaxDurationSeconds: -1}, "max_duration_seconds"},
		{"negative price", catalog.Policy{PricePerRun: -5}, "price_per_run"},
		{"negative cpu price", catalog.Policy{PricePerCPUSecond: -1}, "price_per_cpu_second"},
		{"too many digests", catalog.Policy{AllowedAlgorithms: slices.Repeat([]string{hex64}, catalog.MaxPolicyEntries+1)}, "allowed_algorithms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantCode(t, err, cove.Invalid)
			if ds := cove.ErrorDetails(err); len(ds) == 0 || ds[0].Field != tt.field {
				t.Fatalf("details %+v, want field %s", ds, tt.field)
			}
		})
	}
	// Every problem is reported at once.
	err := catalog.Policy{RequiredTEE: "x", PricePerRun: -1, MaxDurationSeconds: -1}.Validate()
	if len(cove.ErrorDetails(err)) != 3 {
		t.Fatalf("details of three problems: %+v", cove.ErrorDetails(err))
	}

	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		owner, viewer, other := user(t, m, "o@x.io"), user(t, m, "v@x.io"), user(t, m, "x@x.io")
		wsA := newWorkspace(t, m, owner, "A")
		newWorkspace(t, m, other, "B")
		join(t, m, owner, wsA, viewer, workspace.Viewer)
		d := must[*catalog.Dataset](t)(m.Catalog.CreateDataset(ctx, owner, wsA, catalog.DatasetUpload{Name: "d", FileName: "d", Visibility: catalog.Public}, strings.NewReader("d")))
		if d.Policy.RequiredTEE != catalog.TEENone || d.Policy.AllowedAlgorithms == nil || d.Policy.AllowAnyAlgorithm {
			t.Fatalf("a new dataset's policy allows something: %+v", d.Policy)
		}
		pol := catalog.Policy{AllowedAlgorithms: []string{hex64, hex64}, AllowedPublishers: []string{ws}, MaxDurationSeconds: 600, PricePerRun: 7}
		_, err := m.Catalog.SetDatasetPolicy(ctx, viewer, d.ID, pol)
		wantCode(t, err, cove.Forbidden)
		_, err = m.Catalog.SetDatasetPolicy(ctx, other, d.ID, pol)
		wantCode(t, err, cove.Forbidden) // public: other sees it, but may not edit
		_, err = m.Catalog.SetDatasetPolicy(ctx, owner, d.ID, catalog.Policy{PricePerRun: -1})
		wantCode(t, err, cove.Invalid)
		got := must[*catalog.Dataset](t)(m.Catalog.SetDatasetPolicy(ctx, owner, d.ID, pol))
		if !slices.Equal(got.Policy.AllowedAlgorithms, []string{hex64}) || got.Policy.RequiredTEE != catalog.TEENone || got.Policy.PricePerRun != 7 || got.Visibility != catalog.Public {
			t.Fatalf("policy set: %+v", got)
		}
		if again := must[*catalog.Dataset](t)(m.Catalog.FindDatasetByID(ctx, d.ID)); again.Policy.MaxDurationSeconds != 600 || again.Policy.AllowedPublishers[0] != ws {
			t.Fatalf("policy stored: %+v", again.Policy)
		}
	})
}

// tarOf writes the entries as a tar archive; raw entries go as they are.
func tarOf(tb testing.TB, entries ...*tar.Header) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		content := []byte(strings.Repeat("x", int(h.Size)))
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(content); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func file(name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644}
}

func dir(name string) *tar.Header { return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755} }

// tarCases are archives from honest and hostile hands; ok says whether the
// catalog accepts them, which must be exactly when blob.ExtractTar does.
func tarCases(tb testing.TB) []struct {
	name string
	data []byte
	ok   bool
} {
	good := tarOf(tb, dir("data/"), file("data/a.csv", 10), file("b.txt", 3))
	return []struct {
		name string
		data []byte
		ok   bool
	}{
		{"files and directories", good, true},
		{"empty archive", tarOf(tb), true},
		{"nothing at all", nil, true},
		{"implicit directories", tarOf(tb, file("x/y/z", 1)), true},
		{"dot entries", tarOf(tb, dir("./"), file("./a", 1)), true},
		{"directory twice", tarOf(tb, dir("d/"), dir("d/")), true},
		{"padded with junk", append(slices.Clone(good), bytes.Repeat([]byte{'j'}, 700)...), true},
		{"absolute path", tarOf(tb, file("/etc/passwd", 1)), false},
		{"dot dot", tarOf(tb, file("../escape", 1)), false},
		{"dot dot inside", tarOf(tb, file("a/../../b", 1)), false},
		{"hidden dot dot", tarOf(tb, file("a/../b", 1)), false},
		{"symlink", tarOf(tb, &tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc/passwd"}), false},
		{"hard link", tarOf(tb, file("a", 1), &tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "a"}), false},
		{"device", tarOf(tb, &tar.Header{Typeflag: tar.TypeChar, Name: "tty", Devmajor: 5}), false},
		{"fifo", tarOf(tb, &tar.Header{Typeflag: tar.TypeFifo, Name: "p"}), false},
		{"file twice", tarOf(tb, file("a", 1), file("a", 2)), false},
		{"file then directory", tarOf(tb, file("a", 1), dir("a/")), false},
		{"directory then file", tarOf(tb, dir("a/"), file("a", 1)), false},
		{"file under a file", tarOf(tb, file("a", 1), file("a/b", 1)), false},
		{"file named dot", tarOf(tb, file(".", 1)), false},
		{"cut off", good[:700], false},
		{"not a tar", []byte("just some text, not an archive at all, but long enough to fill a header block? no."), false},
	}
}

func TestTarCheckAgreesWithExtractTar(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	ctx := context.Background()
	owner := user(t, m, "o@x.io")
	ws := newWorkspace(t, m, owner, "A")
	for _, c := range tarCases(t) {
		t.Run(c.name, func(t *testing.T) {
			extractErr := blob.ExtractTar(bytes.NewReader(c.data), t.TempDir(), int64(len(c.data))+1)
			if (extractErr == nil) != c.ok {
				t.Fatalf("ExtractTar: %v, want ok=%v (the case is wrong)", extractErr, c.ok)
			}
			d, err := m.Catalog.CreateDataset(ctx, owner, ws, catalog.DatasetUpload{Name: c.name, Format: catalog.FormatTar}, bytes.NewReader(c.data))
			if c.ok {
				if err != nil || d.Format != catalog.FormatTar || d.SHA256 != digest(c.data) {
					t.Fatalf("CreateDataset: %+v, %v", d, err)
				}
				return
			}
			wantCode(t, err, cove.Invalid)
			if slices.Contains(stored(t, m), digest(c.data)) {
				t.Fatal("a refused archive was stored")
			}
		})
	}
}

// brokenReader delivers data, then fails as a dropped connection does.
type brokenReader struct {
	r   io.Reader
	err error
}

func (b *brokenReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, b.err
	}
	return n, err
}

func TestUploadsThatStoreNothing(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		s := m.Catalog
		owner, viewer, stranger := user(t, m, "o@x.io"), user(t, m, "v@x.io"), user(t, m, "s@x.io")
		ws := newWorkspace(t, m, owner, "A")
		join(t, m, owner, ws, viewer, workspace.Viewer)
		content := bytes.Repeat([]byte("0123456789"), 100000)
		cutOff := &cove.Error{Code: cove.Invalid, Message: "the upload broke off"}

		cases := []struct {
			name string
			p    cove.Principal
			do   func(p cove.Principal) error
			code cove.Code
		}{
			{"cut off halfway", owner, func(p cove.Principal) error {
				_, err := s.CreateDataset(ctx, p, ws, fileUpload("half"), &brokenReader{bytes.NewReader(content[:len(content)/2]), cutOff})
				return err
			}, cove.Invalid},
			{"wrong sha256", owner, func(p cove.Principal) error {
				up := fileUpload("wrong")
				up.SHA256 = digest([]byte("something else"))
				_, err := s.CreateDataset(ctx, p, ws, up, bytes.NewReader(content))
				return err
			}, cove.Invalid},
			{"malformed sha256", owner, func(p cove.Principal) error {
				up := fileUpload("bad")
				up.SHA256 = "../../etc/passwd"
				_, err := s.CreateDataset(ctx, p, ws, up, bytes.NewReader(content))
				return err
			}, cove.Invalid},
			{".wasm that is not WebAssembly", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "fake", Kind: catalog.KindWasm, FileName: "fake.wasm"}, strings.NewReader("#!/bin/sh\nrm -rf /\n"))
				return err
			}, cove.Invalid},
			{"WebAssembly version 2", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "v2", Kind: catalog.KindWasm, FileName: "v2.wasm"}, strings.NewReader("\x00asm\x02\x00\x00\x00rest"))
				return err
			}, cove.Invalid},
			{"short WebAssembly", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "short", Kind: catalog.KindWasm, FileName: "s.wasm"}, strings.NewReader("\x00asm"))
				return err
			}, cove.Invalid},
			{".wasm of another kind", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "k", Kind: catalog.KindBin, FileName: "k.wasm"}, bytes.NewReader(wasm))
				return err
			}, cove.Invalid},
			{"python that is not text", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "py", Kind: catalog.KindPython, FileName: "x.py"}, strings.NewReader("print(1)\n\xff\xfe"))
				return err
			}, cove.Invalid},
			{"python with NUL", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "py", Kind: catalog.KindPython, FileName: "x.py"}, strings.NewReader("print(1)\x00"))
				return err
			}, cove.Invalid},
			{"python cut in a character", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "py", Kind: catalog.KindPython, FileName: "x.py"}, strings.NewReader("print('\xc3"))
				return err
			}, cove.Invalid},
			{"empty binary", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "bin", Kind: catalog.KindBin, FileName: "run"}, strings.NewReader(""))
				return err
			}, cove.Invalid},
			{"unknown kind", owner, func(p cove.Principal) error {
				_, err := s.CreateAlgorithm(ctx, p, ws, catalog.AlgorithmUpload{Name: "oci", Kind: "oci", FileName: "img"}, bytes.NewReader(content))
				return err
			}, cove.Invalid},
			{"file name with a path", owner, func(p cove.Principal) error {
				_, err := s.CreateDataset(ctx, p, ws, catalog.DatasetUpload{Name: "p", FileName: "../../etc/passwd"}, bytes.NewReader(content))
				return err
			}, cove.Invalid},
			{"tar with a file name", owner, func(p cove.Principal) error {
				_, err := s.CreateDataset(ctx, p, ws, catalog.DatasetUpload{Name: "p", Format: catalog.FormatTar, FileName: "x"}, bytes.NewReader(content))
				return err
			}, cove.Invalid},
			{"over the size limit", owner, func(p cove.Principal) error {
				small := *s
				small.MaxUploadBytes = 1000
				_, err := small.CreateDataset(ctx, p, ws, fileUpload("big"), bytes.NewReader(content))
				return err
			}, cove.TooLarge},
			{"viewer may not upload", viewer, func(p cove.Principal) error {
				_, err := s.CreateDataset(ctx, p, ws, fileUpload("v"), bytes.NewReader(content))
				return err
			}, cove.Forbidden},
			{"stranger may not know the workspace", stranger, func(p cove.Principal) error {
				_, err := s.CreateDataset(ctx, p, ws, fileUpload("s"), bytes.NewReader(content))
				return err
			}, cove.NotFound},
			{"malformed workspace ID", owner, func(p cove.Principal) error {
				_, err := s.CreateDataset(ctx, p, "workspace:*", fileUpload("s"), bytes.NewReader(content))
				return err
			}, cove.NotFound},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				wantCode(t, c.do(c.p), c.code)
				if sums := stored(t, m); len(sums) != 0 {
					t.Fatalf("blobs stored: %v", sums)
				}
				ds := must[[]*catalog.Dataset](t)(s.ListDatasets(ctx, owner, catalog.Filter{}, cove.Page{}))
				as := must[[]*catalog.Algorithm](t)(s.ListAlgorithms(ctx, owner, catalog.Filter{}, cove.Page{}))
				if len(ds)+len(as) != 0 {
					t.Fatalf("entries registered: %v %v", ds, as)
				}
			})
		}
		// The right digest is accepted.
		up := fileUpload("right")
		up.SHA256 = digest(content)
		d := must[*catalog.Dataset](t)(s.CreateDataset(ctx, owner, ws, up, bytes.NewReader(content)))
		if d.SHA256 != up.SHA256 || d.Size != int64(len(content)) || !slices.Equal(stored(t, m), []string{d.SHA256}) {
			t.Fatalf("upload with the right digest: %+v", d)
		}
	})
}

// usage is a fake catalog.Usage.
type usage struct {
	dataset, algorithm func(id string) bool
}

func (u usage) DatasetInUse(_ context.Context, id string) (bool, error) { return u.dataset(id), nil }
func (u usage) AlgorithmInUse(_ context.Context, id string) (bool, error) {
	return u.algorithm(id), nil
}

func TestDelete(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		s := m.Catalog
		owner, member := user(t, m, "o@x.io"), user(t, m, "m@x.io")
		ws := newWorkspace(t, m, owner, "A")
		join(t, m, owner, ws, member, workspace.Member)

		// Two datasets and an algorithm with the same bytes share one blob.
		same := []byte("\x00asm\x01\x00\x00\x00 same bytes")
		d1 := must[*catalog.Dataset](t)(s.CreateDataset(ctx, owner, ws, fileUpload("one"), bytes.NewReader(same)))
		d2 := must[*catalog.Dataset](t)(s.CreateDataset(ctx, member, ws, catalog.DatasetUpload{Name: "two", FileName: "two", Visibility: catalog.Public}, bytes.NewReader(same)))
		a := must[*catalog.Algorithm](t)(s.CreateAlgorithm(ctx, member, ws, catalog.AlgorithmUpload{Name: "alg", Kind: catalog.KindWasm, FileName: "a.wasm"}, bytes.NewReader(same)))
		if d1.SHA256 != d2.SHA256 || len(stored(t, m)) != 1 {
			t.Fatal("same content stored twice")
		}

		inUse := map[string]bool{d1.ID: true, a.ID: true}
		s.Usage = usage{func(id string) bool { return inUse[id] }, func(id string) bool { return inUse[id] }}
		defer func() { s.Usage = nil }()

		wantCode(t, s.DeleteDataset(ctx, member, d2.ID), cove.Forbidden) // admins only
		wantCode(t, s.DeleteDataset(ctx, owner, d1.ID), cove.Conflict)
		wantCode(t, s.DeleteAlgorithm(ctx, owner, a.ID), cove.Conflict)
		wantCode(t, s.DeleteDataset(ctx, owner, cove.NewID("ds")), cove.NotFound)
		wantCode(t, s.DeleteDataset(ctx, owner, "dataset:x#y"), cove.NotFound)

		if err := s.DeleteDataset(ctx, owner, d2.ID); err != nil {
			t.Fatal(err)
		}
		_, err := s.GetDataset(ctx, owner, d2.ID)
		wantCode(t, err, cove.NotFound)
		if _, err := s.UseDataset(ctx, user(t, m, "x@x.io"), d2.ID); cove.ErrorCode(err) != cove.NotFound {
			t.Fatalf("deleted public dataset still usable by others: %v", err)
		}
		if len(stored(t, m)) != 1 {
			t.Fatal("content still referenced by others was removed")
		}
		inUse = map[string]bool{}
		if err := s.DeleteDataset(ctx, owner, d1.ID); err != nil {
			t.Fatal(err)
		}
		if len(stored(t, m)) != 1 {
			t.Fatal("content still referenced by the algorithm was removed")
		}
		if err := s.DeleteAlgorithm(ctx, owner, a.ID); err != nil {
			t.Fatal(err)
		}
		if sums := stored(t, m); len(sums) != 0 {
			t.Fatalf("unreferenced content kept: %v", sums)
		}
		// The same content can come back.
		must[*catalog.Dataset](t)(s.CreateDataset(ctx, owner, ws, fileUpload("again"), bytes.NewReader(same)))
	})
}

func TestAudit(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	ctx := context.Background()
	s := m.Catalog
	owner := user(t, m, "o@x.io")
	ws := newWorkspace(t, m, owner, "A")
	d := must[*catalog.Dataset](t)(s.CreateDataset(ctx, owner, ws, fileUpload("d"), strings.NewReader("d")))
	must[*catalog.Dataset](t)(s.UpdateDataset(ctx, owner, d.ID, catalog.DatasetUpdate{Name: new("d2")}))
	must[*catalog.Dataset](t)(s.SetDatasetPolicy(ctx, owner, d.ID, catalog.Policy{AllowAnyAlgorithm: true}))
	if err := s.DeleteDataset(ctx, owner, d.ID); err != nil {
		t.Fatal(err)
	}
	a := must[*catalog.Algorithm](t)(s.CreateAlgorithm(ctx, owner, ws, catalog.AlgorithmUpload{Name: "a", Kind: catalog.KindBin, FileName: "a"}, strings.NewReader("x")))
	must[*catalog.Algorithm](t)(s.UpdateAlgorithm(ctx, owner, a.ID, catalog.AlgorithmUpdate{CWL: new("cwlVersion: v1.2")}))
	if err := s.DeleteAlgorithm(ctx, owner, a.ID); err != nil {
		t.Fatal(err)
	}
	svc := &audit.Service{Store: sqlstoreAudit(m), Authz: m.Authz}
	entries, err := svc.List(ctx, owner, audit.Filter{WorkspaceID: ws})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		if e.ActorID != owner.UserID || e.Outcome != audit.Success {
			t.Errorf("entry %+v", e)
		}
		actions = append(actions, e.Action+" "+e.Target)
	}
	for _, want := range []string{"dataset.create " + d.ID, "dataset.update " + d.ID, "dataset.policy " + d.ID, "dataset.delete " + d.ID,
		"algorithm.create " + a.ID, "algorithm.update " + a.ID, "algorithm.delete " + a.ID} {
		if !slices.Contains(actions, want) {
			t.Errorf("no audit entry %q in %v", want, actions)
		}
	}
}

func TestContentCheckReadsInChunks(t *testing.T) {
	// A reader that hands over one byte at a time splits the WebAssembly
	// magic and every UTF-8 character.
	m := apptest.StartEngine(t, apptest.Engines()[0])
	ctx := context.Background()
	owner := user(t, m, "o@x.io")
	ws := newWorkspace(t, m, owner, "A")
	py := "print('héllo wörld 😀')\n"
	if _, err := m.Catalog.CreateAlgorithm(ctx, owner, ws, catalog.AlgorithmUpload{Name: "py", Kind: catalog.KindPython, FileName: "x.py"}, iotest.OneByteReader(strings.NewReader(py))); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Catalog.CreateAlgorithm(ctx, owner, ws, catalog.AlgorithmUpload{Name: "w", Kind: catalog.KindWasm, FileName: "x.wasm"}, iotest.OneByteReader(bytes.NewReader(wasm))); err != nil {
		t.Fatal(err)
	}
	good := tarCases(t)[0].data
	if _, err := m.Catalog.CreateDataset(ctx, owner, ws, catalog.DatasetUpload{Name: "t", Format: catalog.FormatTar}, iotest.OneByteReader(bytes.NewReader(good))); err != nil {
		t.Fatal(err)
	}
	_, err := m.Catalog.CreateAlgorithm(ctx, owner, ws, catalog.AlgorithmUpload{Name: "w", Kind: catalog.KindWasm, FileName: "y.wasm"}, iotest.OneByteReader(strings.NewReader("\x00asX\x01\x00\x00\x00")))
	wantCode(t, err, cove.Invalid)
}

func authzReader(datasetID string) authz.Tuple {
	return authz.NewTuple(authz.AllUsers, authz.Reader, authz.Dataset(datasetID))
}

func sqlstoreAudit(m *app.Main) audit.Store { return sqlstore.NewAuditStore(m.DB) }
