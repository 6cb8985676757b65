package httpapi_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computation/computationtest"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/workspace"
)

// compEnv is a computation service behind the real router, with an owner,
// a result consumer, a viewer and an outsider.
type compEnv struct {
	*computationtest.Env
	tokens map[string]string
	wsA    string
	alg    *catalog.Algorithm
	ds     *catalog.Dataset
	users  map[string]computationtest.User
	doc    map[string]any
}

func newCompEnv(t *testing.T, engine string) *compEnv {
	e := computationtest.New(t, engine)
	v := &compEnv{Env: e, tokens: map[string]string{}, users: map[string]computationtest.User{}}
	for _, name := range []string{"owner", "consumer", "viewer", "outsider"} {
		u := e.User(t, name+"@example.com")
		v.users[name], v.tokens[name] = u, u.Token
	}
	v.wsA = e.NewWorkspace(t, v.users["owner"].Principal, "A")
	e.Join(t, v.users["owner"].Principal, v.wsA, v.users["viewer"].Principal, workspace.Viewer)
	e.NewWorkspace(t, v.users["outsider"].Principal, "B")
	v.alg = e.AddAlgorithm(v.wsA, catalog.KindWasm)
	v.ds = e.AddDataset(v.wsA, catalog.Policy{AllowAnyAlgorithm: true})
	if err := json.Unmarshal(e.API.OpenAPI(), &v.doc); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *compEnv) request(t *testing.T, method, path, who, body string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, v.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+v.tokens[who])
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (v *compEnv) do(t *testing.T, method, path, who, body string) (int, []byte) {
	t.Helper()
	res := v.request(t, method, path, who, body, nil)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// schema returns the documented JSON schema of a response, or nil.
func (v *compEnv) schema(t *testing.T, method, pattern string, status int) any {
	t.Helper()
	op, _ := v.doc["paths"].(map[string]any)[pattern].(map[string]any)[strings.ToLower(method)].(map[string]any)
	if op == nil {
		t.Fatalf("%s %s is not documented", method, pattern)
	}
	resp, _ := op["responses"].(map[string]any)[strconv.Itoa(status)].(map[string]any)
	if resp == nil {
		return v.doc["components"].(map[string]any)["schemas"].(map[string]any)["Error"]
	}
	ct, _ := resp["content"].(map[string]any)["application/json"].(map[string]any)
	if ct == nil {
		return nil
	}
	return ct["schema"]
}

func TestComputationAPI(t *testing.T) {
	for _, engine := range computationtest.Engines() {
		t.Run(engine, func(t *testing.T) {
			v := newCompEnv(t, engine)
			key := computationtest.Key(t).Recipient().String()
			spec, _ := json.Marshal(computationtest.Spec(v.alg, []*catalog.Dataset{v.ds}, computation.ResultConsumer{UserID: v.users["consumer"].UserID, Recipient: key}))
			status, body := v.do(t, "POST", "/api/v1/workspaces/"+v.wsA+"/computations", "owner", string(spec))
			if status != 201 {
				t.Fatalf("create: %d %s", status, body)
			}
			validate(t, v.schema(t, "POST", "/api/v1/workspaces/{id}/computations", 201), body)
			var c computation.Computation
			if err := json.Unmarshal(body, &c); err != nil {
				t.Fatal(err)
			}
			status, body = v.do(t, "POST", "/api/v1/computations/"+c.ID+"/runs", "owner", "")
			if status != 201 {
				t.Fatalf("run: %d %s", status, body)
			}
			var run computation.Run
			_ = json.Unmarshal(body, &run)
			sealed := []byte("sealed bytes")
			sha := v.PutResult(sealed)
			ctx := context.Background()
			for _, st := range []computation.State{computation.Scheduled, computation.Provisioning, computation.Attesting, computation.Receiving, computation.Running, computation.Publishing} {
				if _, err := v.Service.Advance(ctx, run.ID, st, computation.RunUpdate{}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := v.Service.Advance(ctx, run.ID, computation.Succeeded, computation.RunUpdate{ResultSHA256: sha, ResultSize: int64(len(sealed))}); err != nil {
				t.Fatal(err)
			}
			bad, _ := json.Marshal(computation.Spec{AlgorithmID: v.alg.ID, Datasets: []computation.DatasetRef{{Name: "BAD", DatasetID: v.ds.ID}}})
			cid, rid := c.ID, run.ID
			for _, tc := range []struct {
				name, method, path, pattern, who, body string
				status                                 int
				code                                   cove.Code
			}{
				{"get", "GET", "/api/v1/computations/" + cid, "/api/v1/computations/{id}", "consumer", "", 200, ""},
				{"get by outsider", "GET", "/api/v1/computations/" + cid, "/api/v1/computations/{id}", "outsider", "", 404, cove.NotFound},
				{"list", "GET", "/api/v1/computations", "/api/v1/computations", "viewer", "", 200, ""},
				{"list of a workspace", "GET", "/api/v1/computations?workspace=" + v.wsA, "/api/v1/computations", "owner", "", 200, ""},
				{"list of a hidden workspace", "GET", "/api/v1/computations?workspace=" + v.wsA, "/api/v1/computations", "outsider", "", 404, cove.NotFound},
				{"invalid spec", "POST", "/api/v1/workspaces/" + v.wsA + "/computations", "/api/v1/workspaces/{id}/computations", "owner", string(bad), 400, cove.Invalid},
				{"unknown field", "POST", "/api/v1/workspaces/" + v.wsA + "/computations", "/api/v1/workspaces/{id}/computations", "owner", `{"algorithm":"x"}`, 400, cove.Invalid},
				{"update after a run", "PUT", "/api/v1/computations/" + cid, "/api/v1/computations/{id}", "owner", string(spec), 409, cove.Conflict},
				{"dry run", "POST", "/api/v1/computations/" + cid + "/dryrun", "/api/v1/computations/{id}/dryrun", "viewer", "", 200, ""},
				{"approve without providing", "POST", "/api/v1/computations/" + cid + "/approve", "/api/v1/computations/{id}/approve", "consumer", `{}`, 403, cove.Forbidden},
				{"run by a viewer", "POST", "/api/v1/computations/" + cid + "/runs", "/api/v1/computations/{id}/runs", "viewer", "", 403, cove.Forbidden},
				{"runs", "GET", "/api/v1/computations/" + cid + "/runs", "/api/v1/computations/{id}/runs", "viewer", "", 200, ""},
				{"run", "GET", "/api/v1/runs/" + rid, "/api/v1/runs/{id}", "consumer", "", 200, ""},
				{"run by outsider", "GET", "/api/v1/runs/" + rid, "/api/v1/runs/{id}", "outsider", "", 404, cove.NotFound},
				{"events", "GET", "/api/v1/runs/" + rid + "/events", "/api/v1/runs/{id}/events", "viewer", "", 200, ""},
				{"stop an ended run", "POST", "/api/v1/runs/" + rid + "/stop", "/api/v1/runs/{id}/stop", "owner", "", 409, cove.Conflict},
				{"result for a participant", "GET", "/api/v1/runs/" + rid + "/result", "/api/v1/runs/{id}/result", "owner", "", 403, cove.Forbidden},
				{"result for an outsider", "GET", "/api/v1/runs/" + rid + "/result", "/api/v1/runs/{id}/result", "outsider", "", 404, cove.NotFound},
				{"logs for an outsider", "GET", "/api/v1/runs/" + rid + "/logs", "/api/v1/runs/{id}/logs", "outsider", "", 404, cove.NotFound},
				{"logs after garbage", "GET", "/api/v1/runs/" + rid + "/logs?after=x", "/api/v1/runs/{id}/logs", "owner", "", 400, cove.Invalid},
				{"restart", "POST", "/api/v1/runs/" + rid + "/restart", "/api/v1/runs/{id}/restart", "owner", "", 201, ""},
				{"delete with an active run", "DELETE", "/api/v1/computations/" + cid, "/api/v1/computations/{id}", "owner", "", 409, cove.Conflict},
			} {
				t.Run(tc.name, func(t *testing.T) {
					status, body := v.do(t, tc.method, tc.path, tc.who, tc.body)
					if status != tc.status {
						t.Fatalf("%s %s: %d, want %d: %s", tc.method, tc.path, status, tc.status, body)
					}
					if tc.code != "" && !strings.Contains(string(body), `"code":"`+string(tc.code)+`"`) {
						t.Fatalf("body %s lacks code %s", body, tc.code)
					}
					if sch := v.schema(t, tc.method, tc.pattern, status); sch != nil {
						validate(t, sch, body)
					}
				})
			}

			// The manifest route serves the exact bytes that were hashed.
			res := v.request(t, "GET", "/api/v1/computations/"+cid+"/manifest", "viewer", "", nil)
			raw, _ := io.ReadAll(res.Body)
			res.Body.Close()
			sum := sha256.Sum256(raw)
			if res.StatusCode != 200 || hex.EncodeToString(sum[:]) != c.ManifestSHA256 || res.Header.Get("Cove-Sha256") != c.ManifestSHA256 {
				t.Fatalf("manifest: %d %s", res.StatusCode, raw)
			}

			// The result streams to its consumer with its size and digest.
			res = v.request(t, "GET", "/api/v1/runs/"+rid+"/result", "consumer", "", nil)
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(got) != string(sealed) || res.ContentLength != int64(len(sealed)) ||
				res.Header.Get("Content-Type") != "application/octet-stream" || res.Header.Get("Cove-Sha256") != sha {
				t.Fatalf("result: %d %q %v", res.StatusCode, got, res.Header)
			}
		})
	}
}

// event is one server-sent event.
type event struct{ name, id, data string }

// readEvents reads events from an SSE body until it ends.
func readEvents(t *testing.T, r io.Reader) []event {
	t.Helper()
	var (
		out []event
		cur event
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			out = append(out, cur)
			cur = event{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
	return out
}

func TestLogStream(t *testing.T) {
	v := newCompEnv(t, "sqlite")
	ctx := context.Background()
	spec := computationtest.Spec(v.alg, []*catalog.Dataset{v.ds}, computation.ResultConsumer{UserID: v.users["consumer"].UserID, Recipient: computationtest.Key(t).Recipient().String()})
	c, err := v.Service.Create(ctx, v.users["owner"].Principal, v.wsA, spec)
	if err != nil {
		t.Fatal(err)
	}
	run, err := v.Service.StartRun(ctx, v.users["owner"].Principal, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	lines := make([]runproto.LogLine, 5)
	for i := range lines {
		lines[i] = runproto.LogLine{Seq: int64(i + 1), Time: time.Unix(int64(i), 0).UTC(), Stream: "stdout", Text: "line " + strconv.Itoa(i+1)}
	}
	lines[2].Stream = "stderr"
	// The fake reader sends the lines after afterSeq; following, it also
	// ends the run after them, as the real one returns once the last line
	// of an ended run is out.
	var asked []bool
	v.Logs.ReadLogsFunc = func(ctx context.Context, runID string, after int64, follow bool, fn func(runproto.LogLine) error) error {
		asked = append(asked, follow)
		if runID != run.ID {
			t.Errorf("read logs of %s", runID)
		}
		for _, l := range lines {
			if l.Seq > after {
				if err := fn(l); err != nil {
					return err
				}
			}
		}
		if follow {
			_, err := v.Service.Advance(ctx, run.ID, computation.Failed, computation.RunUpdate{Reason: computation.Timeout, Message: "took too long"})
			return err
		}
		return nil
	}

	get := func(query string, h http.Header) (*http.Response, []event) {
		res := v.request(t, "GET", "/api/v1/runs/"+run.ID+"/logs"+query, "viewer", "", h)
		defer res.Body.Close()
		return res, readEvents(t, res.Body)
	}

	// Without follow: what exists, then the stream ends.
	res, evs := get("", nil)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" || len(evs) != 5 {
		t.Fatalf("%d %v: %+v", res.StatusCode, res.Header, evs)
	}
	for i, ev := range evs {
		var l runproto.LogLine
		if err := json.Unmarshal([]byte(ev.data), &l); err != nil || l != lines[i] || ev.id != strconv.Itoa(i+1) || ev.name != "" {
			t.Fatalf("event %d: %+v (%v)", i, ev, err)
		}
	}

	// A client resuming with Last-Event-ID gets the rest, and with follow
	// an end event carrying the run once it has ended.
	_, evs = get("?follow=true&after=1", http.Header{"Last-Event-ID": {"3"}})
	if len(evs) != 3 || evs[0].id != "4" || evs[1].id != "5" || evs[2].name != "end" {
		t.Fatalf("resumed: %+v", evs)
	}
	var end computation.Run
	if err := json.Unmarshal([]byte(evs[2].data), &end); err != nil || end.State != computation.Failed || end.Reason != computation.Timeout {
		t.Fatalf("end event %s", evs[2].data)
	}
	_, evs = get("?after=4", nil)
	if len(evs) != 1 || evs[0].id != "5" {
		t.Fatalf("after=4: %+v", evs)
	}
	// Following an ended run only reads what exists.
	_, evs = get("?follow=true", nil)
	if len(evs) != 6 || evs[5].name != "end" || asked[len(asked)-1] {
		t.Fatalf("following an ended run: %+v, reader asked to follow: %v", evs, asked)
	}

	// A reader failing midway ends the stream with an error event.
	v.Logs.ReadLogsFunc = func(ctx context.Context, runID string, after int64, follow bool, fn func(runproto.LogLine) error) error {
		_ = fn(lines[0])
		return cove.Errorf(cove.Unavailable, "the log stream is down")
	}
	_, evs = get("", nil)
	if len(evs) != 2 || evs[1].name != "error" || !strings.Contains(evs[1].data, `"code":"unavailable"`) {
		t.Fatalf("failing reader: %+v", evs)
	}
}
