package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/workspace"
)

// env is a running server with a few users and two workspaces.
type env struct {
	m      *app.Main
	tokens map[string]string // by user name
	wsA    string
	wsB    string
	doc    map[string]any
	schema *jsonschema.Compiler
}

func newEnv(t *testing.T, e apptest.Engine) *env { return newEnvTB(t, e) }

func newEnvTB(t testing.TB, e apptest.Engine) *env {
	m := apptest.StartEngine(t, e)
	ctx := context.Background()
	v := &env{m: m, tokens: map[string]string{}}
	principals := map[string]cove.Principal{}
	for _, name := range []string{"admin", "owner", "viewer", "outsider"} {
		email := name + "@example.com"
		u, err := m.Identity.Signup(ctx, cove.Principal{}, identity.SignupInput{Email: email, Name: name, Password: "correct horse battery"})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := m.Identity.Login(ctx, identity.LoginInput{Email: email, Password: "correct horse battery", Client: "t"})
		if err != nil {
			t.Fatal(err)
		}
		v.tokens[name] = tok.AccessToken
		principals[name] = cove.Principal{UserID: u.ID, Email: email, Admin: u.Admin}
	}
	wsA, err := m.Workspace.Create(ctx, principals["owner"], "A")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := m.Workspace.Invite(ctx, principals["owner"], wsA.ID, "viewer@example.com", workspace.Viewer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Workspace.Accept(ctx, principals["viewer"], inv.Token); err != nil {
		t.Fatal(err)
	}
	wsB, err := m.Workspace.Create(ctx, principals["outsider"], "B")
	if err != nil {
		t.Fatal(err)
	}
	v.wsA, v.wsB = wsA.ID, wsB.ID
	if err := json.Unmarshal(m.API.OpenAPI(), &v.doc); err != nil {
		t.Fatalf("openapi document is not JSON: %v", err)
	}
	return v
}

func (v *env) do(t *testing.T, method, path, who, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, v.m.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if who != "" {
		tok := v.tokens[who]
		if tok == "" {
			tok = who // a literal credential
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// step is one request of a route test table: who sends what, the
// status and error code expected, and what to do with the answer.
type step struct {
	name, method, pattern, who string
	path, body                 func() string // nil: the pattern, no body
	status                     int
	code                       cove.Code
	then                       func(body []byte)
}

// runSteps sends the steps in order, each answer checked against the
// OpenAPI document; later steps use what earlier ones returned.
func (v *env) runSteps(t *testing.T, steps []step) {
	t.Helper()
	for _, s := range steps {
		path := s.pattern
		if s.path != nil {
			path = s.path()
		}
		body := ""
		if s.body != nil {
			body = s.body()
		}
		status, b := v.do(t, s.method, path, s.who, body)
		if status != s.status {
			t.Fatalf("%s: %s %s: status %d, want %d: %s", s.name, s.method, path, status, s.status, b)
		}
		if s.code != "" {
			var e struct {
				Code cove.Code `json:"code"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Code != s.code {
				t.Fatalf("%s: error %s, want code %s", s.name, b, s.code)
			}
		}
		if status != 204 {
			if sch := v.responseSchema(t, s.method, s.pattern, status); sch != nil {
				validate(t, sch, b)
			}
		}
		if s.then != nil {
			s.then(b)
		}
	}
}

// responseSchema finds the documented schema of a response.
func (v *env) responseSchema(t *testing.T, method, pattern string, status int) any {
	t.Helper()
	paths, _ := v.doc["paths"].(map[string]any)
	op, _ := paths[pattern].(map[string]any)[strings.ToLower(method)].(map[string]any)
	if op == nil {
		t.Fatalf("%s %s is not in the OpenAPI document", method, pattern)
	}
	resp, _ := op["responses"].(map[string]any)[itoa(status)].(map[string]any)
	if resp == nil {
		resp, _ = op["responses"].(map[string]any)["default"].(map[string]any)
		if resp == nil {
			t.Fatalf("%s %s documents no %d response", method, pattern, status)
		}
		return v.doc["components"].(map[string]any)["schemas"].(map[string]any)["Error"]
	}
	content, _ := resp["content"].(map[string]any)
	if content == nil {
		return nil
	}
	return content["application/json"].(map[string]any)["schema"]
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// validate checks body against schema.
func validate(t *testing.T, schema any, body []byte) {
	t.Helper()
	c := jsonschema.NewCompiler()
	if err := c.AddResource("mem://s.json", schema); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("mem://s.json")
	if err != nil {
		t.Fatalf("documented schema does not compile: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, body)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("response does not match the OpenAPI document: %v\nbody: %s", err, body)
	}
}

func TestAPI(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			big := `{"name":"` + strings.Repeat("x", 1<<20) + `"}`
			cases := []struct {
				name, method, path, pattern, who, body string
				status                                 int
				code                                   cove.Code
			}{
				{"health", "GET", "/healthz", "", "", "", 200, ""},
				{"version", "GET", "/api/v1/version", "/api/v1/version", "", "", 200, ""},
				{"me", "GET", "/api/v1/me", "/api/v1/me", "owner", "", 200, ""},
				{"no credential", "GET", "/api/v1/me", "/api/v1/me", "", "", 401, cove.Unauthenticated},
				{"garbage credential", "GET", "/api/v1/me", "/api/v1/me", "not-a-token", "", 401, cove.Unauthenticated},
				{"list my workspaces", "GET", "/api/v1/workspaces", "/api/v1/workspaces", "viewer", "", 200, ""},
				{"get workspace", "GET", "/api/v1/workspaces/" + v.wsA, "/api/v1/workspaces/{id}", "viewer", "", 200, ""},
				{"create workspace", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":"C"}`, 201, ""},
				{"html name verbatim", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":"<b>x</b>' OR 1=1 --"}`, 201, ""},
				{"malformed JSON", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":`, 400, cove.Invalid},
				{"not JSON at all", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `name=x`, 400, cove.Invalid},
				{"trailing data", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":"x"} {}`, 400, cove.Invalid},
				{"unknown field", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":"x","owner":"me"}`, 400, cove.Invalid},
				{"wrong type", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":5}`, 400, cove.Invalid},
				{"empty body", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", ``, 400, cove.Invalid},
				{"body over 1 MiB", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", big, 413, cove.TooLarge},
				{"empty name", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":""}`, 400, cove.Invalid},
				{"over-long name", "POST", "/api/v1/workspaces", "/api/v1/workspaces", "owner", `{"name":"` + strings.Repeat("n", 101) + `"}`, 400, cove.Invalid},
				{"viewer refused a write", "PATCH", "/api/v1/workspaces/" + v.wsA, "/api/v1/workspaces/{id}", "viewer", `{"name":"new"}`, 403, cove.Forbidden},
				{"outsider sees nothing", "GET", "/api/v1/workspaces/" + v.wsA, "/api/v1/workspaces/{id}", "outsider", "", 404, cove.NotFound},
				{"outsider lists no members", "GET", "/api/v1/workspaces/" + v.wsA + "/members", "/api/v1/workspaces/{id}/members", "outsider", "", 404, cove.NotFound},
				{"owner cannot reach B", "DELETE", "/api/v1/workspaces/" + v.wsB, "/api/v1/workspaces/{id}", "owner", "", 404, cove.NotFound},
				{"members", "GET", "/api/v1/workspaces/" + v.wsA + "/members", "/api/v1/workspaces/{id}/members", "viewer", "", 200, ""},
				{"invite", "POST", "/api/v1/workspaces/" + v.wsA + "/invitations", "/api/v1/workspaces/{id}/invitations", "owner", `{"email":"n@example.com","role":"member"}`, 201, ""},
				{"invite bad role", "POST", "/api/v1/workspaces/" + v.wsA + "/invitations", "/api/v1/workspaces/{id}/invitations", "owner", `{"email":"n@example.com","role":"god"}`, 400, cove.Invalid},
				{"bad limit", "GET", "/api/v1/workspaces?limit=0", "/api/v1/workspaces", "owner", "", 400, cove.Invalid},
				{"malformed query", "GET", "/api/v1/workspaces?cursor=%%%", "/api/v1/workspaces", "owner", "", 400, cove.Invalid},
				{"forged cursor", "GET", "/api/v1/workspaces?cursor=!!not-base64!!", "/api/v1/workspaces", "owner", "", 400, cove.Invalid},
				{"users for admin", "GET", "/api/v1/users", "/api/v1/users", "admin", "", 200, ""},
				{"users for others", "GET", "/api/v1/users", "/api/v1/users", "owner", "", 403, cove.Forbidden},
				{"audit for admin", "GET", "/api/v1/audit", "/api/v1/audit", "admin", "", 200, ""},
				{"audit of own workspace", "GET", "/api/v1/audit?workspace=" + v.wsA, "/api/v1/audit", "owner", "", 200, ""},
				{"audit of A for viewer", "GET", "/api/v1/audit?workspace=" + v.wsA, "/api/v1/audit", "viewer", "", 403, cove.Forbidden},
				{"audit of A for outsider", "GET", "/api/v1/audit?workspace=" + v.wsA, "/api/v1/audit", "outsider", "", 404, cove.NotFound},
				{"create token", "POST", "/api/v1/tokens", "/api/v1/tokens", "owner", `{"name":"ci","expires_in":"24h"}`, 201, ""},
				{"token bad duration", "POST", "/api/v1/tokens", "/api/v1/tokens", "owner", `{"name":"ci","expires_in":"soon"}`, 400, cove.Invalid},
				{"signup weak password", "POST", "/api/v1/signup", "/api/v1/signup", "", `{"email":"w@example.com","name":"w","password":"short"}`, 400, cove.Invalid},
				{"signup duplicate", "POST", "/api/v1/signup", "/api/v1/signup", "", `{"email":"OWNER@example.com","name":"w","password":"correct horse battery"}`, 409, cove.Conflict},
				{"login wrong password", "POST", "/api/v1/login", "/api/v1/login", "", `{"email":"owner@example.com","password":"nope nope nope"}`, 401, cove.Unauthenticated},
				{"unknown route", "GET", "/api/v1/nothing", "", "owner", "", 404, cove.NotFound},
				{"wrong method", "PUT", "/api/v1/workspaces", "", "owner", "", 404, cove.NotFound},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					status, body := v.do(t, c.method, c.path, c.who, c.body)
					if status != c.status {
						t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, status, c.status, body)
					}
					if c.code != "" {
						var e struct {
							Code    cove.Code `json:"code"`
							Message string    `json:"message"`
						}
						if err := json.Unmarshal(body, &e); err != nil || e.Code != c.code || e.Message == "" {
							t.Fatalf("error body %s, want code %q and a message", body, c.code)
						}
					}
					if c.pattern != "" && status != 204 {
						if sch := v.responseSchema(t, c.method, c.pattern, status); sch != nil {
							validate(t, sch, body)
						}
					}
				})
			}
			// The hostile name came back verbatim.
			_, body := v.do(t, "GET", "/api/v1/workspaces?limit=500", "owner", "")
			if !strings.Contains(string(body), `\u003cb\u003ex\u003c/b\u003e' OR 1=1 --`) {
				t.Fatalf("stored name not returned verbatim: %s", body)
			}
		})
	}
}

func TestPagination(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	for i := range 7 {
		if status, b := v.do(t, "POST", "/api/v1/workspaces", "outsider", `{"name":"w`+itoa(i)+`"}`); status != 201 {
			t.Fatalf("create: %d %s", status, b)
		}
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		status, body := v.do(t, "GET", "/api/v1/workspaces?limit=3&cursor="+cursor, "outsider", "")
		if status != 200 {
			t.Fatalf("page: %d %s", status, body)
		}
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, it := range page.Items {
			if seen[it.ID] {
				t.Fatalf("workspace %s on two pages", it.ID)
			}
			seen[it.ID] = true
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != 8 || pages != 3 {
		t.Fatalf("saw %d workspaces on %d pages, want 8 on 3", len(seen), pages)
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	status, body := v.do(t, "GET", "/api/v1/openapi.json", "", "")
	if status != 200 {
		t.Fatalf("openapi.json: %d", status)
	}
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("document: %v %q", err, doc.OpenAPI)
	}
	ops := 0
	for path, methods := range doc.Paths {
		for method, op := range methods {
			ops++
			if op["summary"] == "" || op["operationId"] == "" {
				t.Errorf("%s %s lacks a summary or operationId", method, path)
			}
			// Every documented route is served: an unauthenticated call gets
			// an answer from the route (401 or a validation error), never the
			// unknown-route 404.
			p := strings.NewReplacer("{id}", v.wsA, "{user}", "usr_x", "{inv}", "inv_x").Replace(path)
			st, b := v.do(t, strings.ToUpper(method), p, "", "")
			if st == 404 && strings.Contains(string(b), "no such route") {
				t.Errorf("%s %s is documented but not served", method, path)
			}
			for _, schema := range []any{op["requestBody"]} {
				if schema == nil {
					continue
				}
				body, ok := schema.(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)
				if !ok {
					continue // a streamed body: bytes, no JSON schema
				}
				s := body["schema"]
				c := jsonschema.NewCompiler()
				if err := c.AddResource("mem://r.json", s); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Compile("mem://r.json"); err != nil {
					t.Errorf("%s %s request schema: %v", method, path, err)
				}
			}
		}
	}
	if ops < 25 {
		t.Fatalf("only %d operations documented", ops)
	}
}
