package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
)

// TestNodeRoutes runs the node routes in order, each answer checked
// against the OpenAPI document; later requests use what earlier ones
// returned.
func TestNodeRoutes(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			var tokenSecret, tokenID, nodeID string
			enroll := func(token string) string {
				return `{"token":"` + token + `","name":"edge-1","capacity":{"cpus":2,"memory_bytes":1073741824,"disk_bytes":0},"drivers":["wasm"],"labels":{"zone":"eu"},"tee":"none"}`
			}
			steps := []struct {
				name, method, pattern, who string
				path, body                 func() string
				status                     int
				code                       cove.Code
				then                       func(body []byte)
			}{
				{name: "list needs a login", method: "GET", pattern: "/api/v1/nodes", status: 401, code: cove.Unauthenticated},
				{name: "platform token for non-admins", method: "POST", pattern: "/api/v1/nodes/enroll-tokens", who: "owner", body: func() string { return `{}` }, status: 403, code: cove.Forbidden},
				{name: "workspace token for outsiders", method: "POST", pattern: "/api/v1/nodes/enroll-tokens", who: "outsider", body: func() string { return `{"workspace_id":"` + v.wsA + `"}` }, status: 404, code: cove.NotFound},
				{name: "token lifetime", method: "POST", pattern: "/api/v1/nodes/enroll-tokens", who: "admin", body: func() string { return `{"expires_in":"1000h"}` }, status: 400, code: cove.Invalid},
				{name: "create token", method: "POST", pattern: "/api/v1/nodes/enroll-tokens", who: "owner", body: func() string { return `{"workspace_id":"` + v.wsA + `","expires_in":"2h","auto_approve":false}` }, status: 201,
					then: func(b []byte) {
						var tok struct{ ID, Token string }
						_ = json.Unmarshal(b, &tok)
						tokenSecret, tokenID = tok.Token, tok.ID
					}},
				{name: "list tokens", method: "GET", pattern: "/api/v1/nodes/enroll-tokens", who: "owner", path: func() string { return "/api/v1/nodes/enroll-tokens?workspace=" + v.wsA }, status: 200,
					then: func(b []byte) {
						if strings.Contains(string(b), tokenSecret) || strings.Contains(string(b), "token_hash") {
							t.Fatalf("a token list shows secrets: %s", b)
						}
					}},
				{name: "enroll with a bad token", method: "POST", pattern: "/api/v1/nodes/enroll", body: func() string { return enroll("cve_bad") }, status: 401, code: cove.Unauthenticated},
				{name: "enroll with unknown fields", method: "POST", pattern: "/api/v1/nodes/enroll", body: func() string { return `{"token":"x","admin":true}` }, status: 400, code: cove.Invalid},
				{name: "enroll", method: "POST", pattern: "/api/v1/nodes/enroll", body: func() string { return enroll(tokenSecret) }, status: 201,
					then: func(b []byte) {
						var rep struct {
							NodeID string `json:"node_id"`
						}
						_ = json.Unmarshal(b, &rep)
						nodeID = rep.NodeID
					}},
				{name: "enroll again", method: "POST", pattern: "/api/v1/nodes/enroll", body: func() string { return enroll(tokenSecret) }, status: 401, code: cove.Unauthenticated},
				{name: "list nodes", method: "GET", pattern: "/api/v1/nodes", who: "viewer", path: func() string { return "/api/v1/nodes?state=pending" }, status: 200,
					then: func(b []byte) {
						if !strings.Contains(string(b), nodeID) {
							t.Fatalf("viewer does not see A's node: %s", b)
						}
					}},
				{name: "bad state", method: "GET", pattern: "/api/v1/nodes", who: "admin", path: func() string { return "/api/v1/nodes?state=asleep" }, status: 400, code: cove.Invalid},
				{name: "get node", method: "GET", pattern: "/api/v1/nodes/{id}", who: "viewer", path: func() string { return "/api/v1/nodes/" + nodeID }, status: 200},
				{name: "outsider gets node", method: "GET", pattern: "/api/v1/nodes/{id}", who: "outsider", path: func() string { return "/api/v1/nodes/" + nodeID }, status: 404, code: cove.NotFound},
				{name: "viewer approves", method: "POST", pattern: "/api/v1/nodes/{id}/approve", who: "viewer", path: func() string { return "/api/v1/nodes/" + nodeID + "/approve" }, status: 403, code: cove.Forbidden},
				{name: "approve", method: "POST", pattern: "/api/v1/nodes/{id}/approve", who: "owner", path: func() string { return "/api/v1/nodes/" + nodeID + "/approve" }, status: 200},
				{name: "drain", method: "POST", pattern: "/api/v1/nodes/{id}/drain", who: "admin", path: func() string { return "/api/v1/nodes/" + nodeID + "/drain" }, status: 200},
				{name: "revoke used token", method: "DELETE", pattern: "/api/v1/nodes/enroll-tokens/{id}", who: "owner", path: func() string { return "/api/v1/nodes/enroll-tokens/" + tokenID }, status: 409, code: cove.Conflict},
				{name: "remove with a bad force", method: "DELETE", pattern: "/api/v1/nodes/{id}", who: "owner", path: func() string { return "/api/v1/nodes/" + nodeID + "?force=yes" }, status: 400, code: cove.Invalid},
				{name: "remove", method: "DELETE", pattern: "/api/v1/nodes/{id}", who: "owner", path: func() string { return "/api/v1/nodes/" + nodeID }, status: 204},
				{name: "removed", method: "GET", pattern: "/api/v1/nodes/{id}", who: "admin", path: func() string { return "/api/v1/nodes/" + nodeID }, status: 404, code: cove.NotFound},
			}
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
		})
	}
}
