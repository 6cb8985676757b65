package httpapi_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
)

// upload sends content as the body of a POST, as the SDK does.
func (v *env) upload(t *testing.T, path, who string, content io.Reader, sum string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", v.m.URL+path, content)
	if err != nil {
		t.Fatal(err)
	}
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+v.tokens[who])
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if sum != "" {
		req.Header.Set("X-Content-SHA256", sum)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// addUser signs up and logs in name, a member of no workspace yet.
func (v *env) addUser(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	email := name + "@example.com"
	if _, err := v.m.Identity.Signup(ctx, cove.Principal{}, identity.SignupInput{Email: email, Name: name, Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	tok, err := v.m.Identity.Login(ctx, identity.LoginInput{Email: email, Password: "correct horse battery", Client: "t"})
	if err != nil {
		t.Fatal(err)
	}
	v.tokens[name] = tok.AccessToken
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func idOf(t *testing.T, body []byte) string {
	t.Helper()
	var x struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &x); err != nil || x.ID == "" {
		t.Fatalf("no id in %s", body)
	}
	return x.ID
}

func tarArchive(t *testing.T, hdrs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(bytes.Repeat([]byte("x"), int(h.Size))); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCatalogAPI(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			v.addUser(t, "third")
			wsC := v.do2(t, "POST", "/api/v1/workspaces", "third", `{"name":"C"}`)
			csv := []byte("name,age\nada,36\n")
			wasm := []byte("\x00asm\x01\x00\x00\x00")
			goodTar := tarArchive(t, tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755}, tar.Header{Typeflag: tar.TypeReg, Name: "d/a.csv", Size: 4, Mode: 0o644})
			evilTar := tarArchive(t, tar.Header{Typeflag: tar.TypeSymlink, Name: "passwd", Linkname: "/etc/passwd"})
			dsPath := "/api/v1/workspaces/" + v.wsA + "/datasets"
			algPath := "/api/v1/workspaces/" + v.wsA + "/algorithms"
			q := func(kv ...string) string {
				vals := url.Values{}
				for i := 0; i+1 < len(kv); i += 2 {
					vals.Add(kv[i], kv[i+1])
				}
				return "?" + vals.Encode()
			}

			uploads := []struct {
				name, path, who string
				body            []byte
				sum             string
				status          int
				code            cove.Code
			}{
				{"public csv", dsPath + q("name", "People <b>", "file_name", "people.csv", "visibility", "public", "description", "line one\nline two"), "owner", csv, "", 201, ""},
				{"private with its digest", dsPath + q("name", "Private", "file_name", "p.csv"), "owner", csv, sha(csv), 201, ""},
				{"restricted to B", dsPath + q("name", "For B", "file_name", "b.csv", "visibility", "restricted", "shared_with", v.wsB), "owner", csv, "", 201, ""},
				{"directory as tar", dsPath + q("name", "Dir", "format", "tar"), "owner", goodTar, "", 201, ""},
				{"wasm algorithm", algPath + q("name", "Hello", "kind", "wasm", "file_name", "hello.wasm", "args", "--verbose", "args", "x y", "visibility", "public"), "owner", wasm, "", 201, ""},
				{"wrong digest", dsPath + q("name", "Wrong", "file_name", "w.csv"), "owner", csv, sha([]byte("other")), 400, cove.Invalid},
				{"malformed digest", dsPath + q("name", "Bad", "file_name", "w.csv"), "owner", csv, "ABC", 400, cove.Invalid},
				{"not WebAssembly", algPath + q("name", "Fake", "kind", "wasm", "file_name", "fake.wasm"), "owner", csv, "", 400, cove.Invalid},
				{"hostile tar", dsPath + q("name", "Evil", "format", "tar"), "owner", evilTar, "", 400, cove.Invalid},
				{"not a tar", dsPath + q("name", "Evil", "format", "tar"), "owner", csv, "", 400, cove.Invalid},
				{"no name", dsPath + q("file_name", "x.csv"), "owner", csv, "", 400, cove.Invalid},
				{"unknown format", dsPath + q("name", "x", "format", "zip"), "owner", csv, "", 400, cove.Invalid},
				{"restricted to nobody", dsPath + q("name", "x", "file_name", "x", "visibility", "restricted"), "owner", csv, "", 400, cove.Invalid},
				{"viewer may not upload", dsPath + q("name", "V", "file_name", "v.csv"), "viewer", csv, "", 403, cove.Forbidden},
				{"outsider cannot see A", dsPath + q("name", "O", "file_name", "o.csv"), "outsider", csv, "", 404, cove.NotFound},
				{"no credential", dsPath + q("name", "N", "file_name", "n.csv"), "", csv, "", 401, cove.Unauthenticated},
			}
			ids := map[string]string{}
			for _, u := range uploads {
				t.Run(u.name, func(t *testing.T) {
					status, body := v.upload(t, u.path, u.who, bytes.NewReader(u.body), u.sum)
					if status != u.status {
						t.Fatalf("status %d, want %d: %s", status, u.status, body)
					}
					pattern := "/api/v1/workspaces/{ws}/datasets"
					if strings.Contains(u.path, "/algorithms") {
						pattern = "/api/v1/workspaces/{ws}/algorithms"
					}
					validate(t, v.responseSchema(t, "POST", pattern, status), body)
					if u.code != "" {
						var e httpapi.ErrorBody
						if json.Unmarshal(body, &e); e.Code != u.code {
							t.Fatalf("code %q, want %q: %s", e.Code, u.code, body)
						}
						return
					}
					ids[u.name] = idOf(t, body)
				})
			}
			if t.Failed() {
				t.FailNow()
			}
			pub, priv, restr, alg := ids["public csv"], ids["private with its digest"], ids["restricted to B"], ids["wasm algorithm"]
			// Only the accepted uploads are stored.
			if n := countBlobs(t, v); n != 3 { // csv, tar, wasm
				t.Fatalf("%d blobs stored, want 3", n)
			}

			cases := []struct {
				name, method, path, pattern, who, body string
				status                                 int
				code                                   cove.Code
			}{
				{"get public as outsider", "GET", "/api/v1/datasets/" + pub, "/api/v1/datasets/{id}", "outsider", "", 200, ""},
				{"get private as viewer", "GET", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "viewer", "", 200, ""},
				{"get private as outsider", "GET", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "outsider", "", 404, cove.NotFound},
				{"get restricted as B", "GET", "/api/v1/datasets/" + restr, "/api/v1/datasets/{id}", "outsider", "", 200, ""},
				{"get restricted as C", "GET", "/api/v1/datasets/" + restr, "/api/v1/datasets/{id}", "third", "", 404, cove.NotFound},
				{"get unknown", "GET", "/api/v1/datasets/" + cove.NewID("ds"), "/api/v1/datasets/{id}", "owner", "", 404, cove.NotFound},
				{"get malformed", "GET", "/api/v1/datasets/dataset:x%23reader", "/api/v1/datasets/{id}", "owner", "", 404, cove.NotFound},
				{"get algorithm as C", "GET", "/api/v1/algorithms/" + alg, "/api/v1/algorithms/{id}", "third", "", 200, ""},
				{"list datasets", "GET", "/api/v1/datasets?name=p", "/api/v1/datasets", "owner", "", 200, ""},
				{"list bad visibility", "GET", "/api/v1/datasets?visibility=all", "/api/v1/datasets", "owner", "", 400, cove.Invalid},
				{"list algorithms by kind", "GET", "/api/v1/algorithms?kind=wasm&workspace=" + v.wsA, "/api/v1/algorithms", "third", "", 200, ""},
				{"share private with C", "PATCH", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "owner", `{"visibility":"restricted","shared_with":["` + wsC + `"]}`, 200, ""},
				{"now C sees it", "GET", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "third", "", 200, ""},
				{"viewer may not edit", "PATCH", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "viewer", `{"name":"x"}`, 403, cove.Forbidden},
				{"C may not edit", "PATCH", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "third", `{"name":"x"}`, 403, cove.Forbidden},
				{"unknown field", "PATCH", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "owner", `{"format":"tar"}`, 400, cove.Invalid},
				{"make it private", "PATCH", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "owner", `{"visibility":"private"}`, 200, ""},
				{"C no longer sees it", "GET", "/api/v1/datasets/" + priv, "/api/v1/datasets/{id}", "third", "", 404, cove.NotFound},
				{"set policy", "PUT", "/api/v1/datasets/" + pub + "/policy", "/api/v1/datasets/{id}/policy", "owner",
					`{"allowed_algorithms":["` + sha(wasm) + `"],"allowed_publishers":["` + v.wsA + `"],"allow_any_algorithm":false,"allow_network":false,"required_tee":"sev-snp","approval_required":true,"max_duration_seconds":600,"price_per_run":10,"price_per_cpu_second":1}`, 200, ""},
				{"policy with a bad digest", "PUT", "/api/v1/datasets/" + pub + "/policy", "/api/v1/datasets/{id}/policy", "owner", `{"allowed_algorithms":["nope"],"required_tee":"sgx"}`, 400, cove.Invalid},
				{"policy by an outsider", "PUT", "/api/v1/datasets/" + pub + "/policy", "/api/v1/datasets/{id}/policy", "outsider", `{}`, 403, cove.Forbidden},
				{"algorithm CWL", "PATCH", "/api/v1/algorithms/" + alg, "/api/v1/algorithms/{id}", "owner", `{"cwl":"cwlVersion: v1.2\nclass: CommandLineTool\n"}`, 200, ""},
				{"viewer may not delete", "DELETE", "/api/v1/datasets/" + pub, "/api/v1/datasets/{id}", "viewer", "", 403, cove.Forbidden},
				{"outsider may not delete", "DELETE", "/api/v1/datasets/" + pub, "/api/v1/datasets/{id}", "outsider", "", 403, cove.Forbidden},
				{"delete", "DELETE", "/api/v1/datasets/" + pub, "/api/v1/datasets/{id}", "owner", "", 204, ""},
				{"deleted", "GET", "/api/v1/datasets/" + pub, "/api/v1/datasets/{id}", "owner", "", 404, cove.NotFound},
				{"delete algorithm", "DELETE", "/api/v1/algorithms/" + alg, "/api/v1/algorithms/{id}", "owner", "", 204, ""},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					status, body := v.do(t, c.method, c.path, c.who, c.body)
					if status != c.status {
						t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, status, c.status, body)
					}
					if c.code != "" {
						var e httpapi.ErrorBody
						if json.Unmarshal(body, &e); e.Code != c.code || e.Message == "" {
							t.Fatalf("error body %s, want code %q", body, c.code)
						}
					}
					if status != 204 {
						if sch := v.responseSchema(t, c.method, c.pattern, status); sch != nil {
							validate(t, sch, body)
						}
					}
				})
			}

			// Stored as sent, shown as stored.
			_, body := v.do(t, "GET", "/api/v1/datasets?visibility=restricted", "owner", "")
			var page httpapi.List[catalog.Dataset]
			if err := json.Unmarshal(body, &page); err != nil || len(page.Items) != 1 || page.Items[0].ID != restr || page.Items[0].SharedWith[0] != v.wsB {
				t.Fatalf("restricted list: %s", body)
			}
			_, body = v.do(t, "GET", "/api/v1/datasets/"+restr, "outsider", "")
			if !strings.Contains(string(body), `"shared_with":[]`) {
				t.Fatalf("another workspace sees who else may use it: %s", body)
			}
			_, body = v.do(t, "GET", "/api/v1/datasets/"+priv, "owner", "")
			var d catalog.Dataset
			if err := json.Unmarshal(body, &d); err != nil || d.SHA256 != sha(csv) || d.Size != int64(len(csv)) || d.FileName != "p.csv" || d.Format != "file" {
				t.Fatalf("dataset %s", body)
			}
		})
	}
}

// do2 makes a JSON call that must succeed and returns the new object's ID.
func (v *env) do2(t *testing.T, method, path, who, body string) string {
	t.Helper()
	status, b := v.do(t, method, path, who, body)
	if status/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, status, b)
	}
	return idOf(t, b)
}

func countBlobs(t *testing.T, v *env) int {
	t.Helper()
	n := 0
	if err := v.m.Blobs.Walk(context.Background(), func(blob.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func tmpFiles(t *testing.T, v *env) []os.FileInfo {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(v.m.Config.DataDir, "blobs", "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var out []os.FileInfo
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			out = append(out, fi)
		}
	}
	return out
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestUploadCutOffHalfway(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	const total = 8 << 20
	content := bytes.Repeat([]byte("0123456789abcdef"), total/16)

	u, _ := url.Parse(v.m.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/workspaces/%s/datasets?name=half&file_name=half.bin HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		v.wsA, u.Host, v.tokens["owner"], total)
	if _, err := conn.Write(content[:total/2]); err != nil {
		t.Fatal(err)
	}
	// The server stores the body as it arrives rather than holding it:
	// most of the half sent is on disk before the request is complete.
	waitFor(t, "the upload to reach the disk", func() bool {
		for _, fi := range tmpFiles(t, v) {
			if fi.Size() >= total/4 {
				return true
			}
		}
		return false
	})
	conn.Close()

	// Once the server has answered (into the void), nothing is left.
	waitFor(t, "the request to end", func() bool {
		_, metrics := v.do(t, "GET", "/metrics", "", "")
		return strings.Contains(string(metrics), `cove_http_requests_total{code="`) && strings.Contains(string(metrics), `route="POST /api/v1/workspaces/{ws}/datasets"`)
	})
	if files := tmpFiles(t, v); len(files) != 0 {
		t.Fatalf("temporary files left: %d", len(files))
	}
	if n := countBlobs(t, v); n != 0 {
		t.Fatalf("%d blobs stored", n)
	}
	_, body := v.do(t, "GET", "/api/v1/datasets", "owner", "")
	if !strings.Contains(string(body), `"items":[]`) {
		t.Fatalf("a dataset was registered: %s", body)
	}

	// The same upload, complete, works.
	status, body := v.upload(t, "/api/v1/workspaces/"+v.wsA+"/datasets?name=whole&file_name=whole.bin", "owner", bytes.NewReader(content), sha(content))
	if status != 201 || idOf(t, body) == "" {
		t.Fatalf("whole upload: %d %s", status, body)
	}
}

func TestCatalogPagination(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	for i := range 7 {
		path := fmt.Sprintf("/api/v1/workspaces/%s/datasets?name=d%d&file_name=f&visibility=public", v.wsB, i)
		if status, b := v.upload(t, path, "outsider", strings.NewReader(fmt.Sprint(i)), ""); status != 201 {
			t.Fatalf("upload: %d %s", status, b)
		}
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		status, body := v.do(t, "GET", "/api/v1/datasets?limit=3&workspace="+v.wsB+"&cursor="+cursor, "owner", "")
		if status != 200 {
			t.Fatalf("page: %d %s", status, body)
		}
		var page httpapi.List[catalog.Dataset]
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, d := range page.Items {
			if seen[d.ID] {
				t.Fatalf("dataset %s on two pages", d.ID)
			}
			seen[d.ID] = true
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != 7 || pages != 3 {
		t.Fatalf("saw %d datasets on %d pages, want 7 on 3", len(seen), pages)
	}
}
