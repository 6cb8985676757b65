package sdk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
)

func TestCatalog(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			m := apptest.StartEngine(t, e)
			ctx := context.Background()
			owner, _ := MustLogin(t, m.URL, "owner@example.com")
			other, _ := MustLogin(t, m.URL, "other@example.com")
			ws, err := owner.CreateWorkspace(ctx, "Lab")
			if err != nil {
				t.Fatal(err)
			}
			otherWS, err := other.CreateWorkspace(ctx, "Other")
			if err != nil {
				t.Fatal(err)
			}

			// Progress counts up to the size as the body streams.
			content := bytes.Repeat([]byte("a,b,c\n"), 200000)
			h := sha256.Sum256(content)
			sum := hex.EncodeToString(h[:])
			var seen []int64
			d, err := owner.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "Big", FileName: "big.csv", SHA256: sum}, bytes.NewReader(content), int64(len(content)), func(n int64) { seen = append(seen, n) })
			if err != nil {
				t.Fatal(err)
			}
			if d.SHA256 != sum || d.Size != int64(len(content)) || d.Visibility != catalog.Private {
				t.Fatalf("uploaded %+v", d)
			}
			if len(seen) < 2 || seen[len(seen)-1] != int64(len(content)) || !slices.IsSorted(seen) {
				t.Fatalf("progress %v", seen)
			}

			// A wrong digest is refused with the server's code.
			_, err = owner.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "Bad", FileName: "b", SHA256: strings.Repeat("0", 64)}, bytes.NewReader(content), int64(len(content)), nil)
			wantCode(t, err, cove.Invalid)

			// Unknown size: streamed from a pipe, as a directory is.
			pr, pw := io.Pipe()
			go func() {
				for range 100 {
					pw.Write([]byte("line\n"))
				}
				pw.Close()
			}()
			piped, err := owner.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "Piped", FileName: "p.txt", Visibility: catalog.Public}, pr, -1, nil)
			if err != nil || piped.Size != 500 {
				t.Fatalf("piped upload: %+v %v", piped, err)
			}
			// Empty content.
			empty, err := owner.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "Empty", FileName: "e"}, strings.NewReader(""), 0, nil)
			if err != nil || empty.Size != 0 {
				t.Fatalf("empty upload: %+v %v", empty, err)
			}

			alg, err := owner.UploadAlgorithm(ctx, ws.ID, catalog.AlgorithmUpload{Name: "Stats", Kind: catalog.KindPython, FileName: "stats.py", Args: []string{"--col", "b"}, Visibility: catalog.Restricted, SharedWith: []string{otherWS.ID}}, strings.NewReader("print('hi')\n"), 12, nil)
			if err != nil || !slices.Equal(alg.Args, []string{"--col", "b"}) || !slices.Equal(alg.SharedWith, []string{otherWS.ID}) {
				t.Fatalf("algorithm: %+v %v", alg, err)
			}
			_, err = owner.UploadAlgorithm(ctx, ws.ID, catalog.AlgorithmUpload{Name: "Fake", Kind: catalog.KindWasm, FileName: "f.wasm"}, strings.NewReader("MZ not wasm"), -1, nil)
			wantCode(t, err, cove.Invalid)

			// The other user sees the public dataset and the shared
			// algorithm, not the private ones.
			if _, err := other.GetDataset(ctx, d.ID); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("other gets the private dataset: %v", err)
			}
			var names []string
			for it, err := range sdk.All(ctx, func(ctx context.Context, o sdk.ListOptions) ([]*catalog.Dataset, string, error) {
				o.Limit = 1
				return other.ListDatasets(ctx, catalog.Filter{}, o)
			}) {
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, it.Name)
			}
			if !slices.Equal(names, []string{"Piped"}) {
				t.Fatalf("other lists %v", names)
			}
			algs, _, err := other.ListAlgorithms(ctx, catalog.Filter{Kind: catalog.KindPython}, sdk.ListOptions{})
			if err != nil || len(algs) != 1 || len(algs[0].SharedWith) != 0 {
				t.Fatalf("other's algorithms: %+v %v", algs, err)
			}

			name := "Big <data>"
			d, err = owner.UpdateDataset(ctx, d.ID, catalog.DatasetUpdate{Name: &name})
			if err != nil || d.Name != name {
				t.Fatalf("update: %+v %v", d, err)
			}
			_, err = owner.SetDatasetPolicy(ctx, d.ID, catalog.Policy{AllowedAlgorithms: []string{"x"}, PricePerRun: -1})
			wantCode(t, err, cove.Invalid)
			if details := cove.ErrorDetails(err); len(details) != 2 {
				t.Fatalf("policy details survive the wire: %+v", details)
			}
			d, err = owner.SetDatasetPolicy(ctx, d.ID, catalog.Policy{AllowedAlgorithms: []string{alg.SHA256}, RequiredTEE: catalog.TEEAny})
			if err != nil || d.Policy.RequiredTEE != catalog.TEEAny {
				t.Fatalf("policy: %+v %v", d, err)
			}
			cwl := "cwlVersion: v1.2"
			if a, err := owner.UpdateAlgorithm(ctx, alg.ID, catalog.AlgorithmUpdate{CWL: &cwl}); err != nil || a.CWL != cwl {
				t.Fatalf("cwl: %+v %v", a, err)
			}
			if a, err := other.GetAlgorithm(ctx, alg.ID); err != nil || a.CWL != cwl {
				t.Fatalf("other gets the algorithm: %+v %v", a, err)
			}
			wantCode(t, other.DeleteAlgorithm(ctx, alg.ID), cove.Forbidden)
			if err := owner.DeleteAlgorithm(ctx, alg.ID); err != nil {
				t.Fatal(err)
			}
			if err := owner.DeleteDataset(ctx, d.ID); err != nil {
				t.Fatal(err)
			}
			_, err = owner.GetDataset(ctx, d.ID)
			wantCode(t, err, cove.NotFound)
		})
	}
}

func TestUploadRenewsAnExpiredToken(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	ctx := context.Background()
	c, tokens := MustLogin(t, m.URL, "ada@example.com")
	ws, err := c.CreateWorkspace(ctx, "Lab")
	if err != nil {
		t.Fatal(err)
	}
	renewed := false
	stale := MustNew(t, m.URL, sdk.WithToken("expired.access.token"), sdk.WithRefresh(tokens.RefreshToken, func(*identity.Tokens) { renewed = true }))
	content := bytes.Repeat([]byte("x"), 1<<20)
	d, err := stale.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "d", FileName: "d"}, bytes.NewReader(content), int64(len(content)), nil)
	if err != nil || !renewed || d.Size != int64(len(content)) {
		t.Fatalf("upload with an expired token: %+v %v (renewed %v)", d, err, renewed)
	}
}
