package httpapi_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/node/nodetest"
)

// weakCSR is a certificate request for an RSA key too short to accept.
func weakCSR(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestNodeRoutes runs the node routes in order, each answer checked
// against the OpenAPI document; later requests use what earlier ones
// returned.
func TestNodeRoutes(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			var tokenSecret, tokenID, nodeID string
			keys := nodetest.NewKeys(t, "")
			enrollWith := func(token, csr string) string {
				c, _ := json.Marshal(csr)
				return `{"token":"` + token + `","name":"edge-1","capacity":{"cpus":2,"memory_bytes":1073741824,"disk_bytes":0},"drivers":["wasm"],"labels":{"zone":"eu"},"tee":"none",` +
					`"csr":` + string(c) + `,"nats_user":"` + keys.NATSUser + `"}`
			}
			enroll := func(token string) string { return enrollWith(token, keys.CSR) }
			weak := weakCSR(t)
			steps := []step{
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
				{name: "enroll with a garbage CSR", method: "POST", pattern: "/api/v1/nodes/enroll", body: func() string {
					return enrollWith(tokenSecret, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
				}, status: 400, code: cove.Invalid},
				{name: "enroll with an RSA-1024 key", method: "POST", pattern: "/api/v1/nodes/enroll", body: func() string { return enrollWith(tokenSecret, weak) }, status: 400, code: cove.Invalid},
				{name: "self without a certificate", method: "GET", pattern: "/api/v1/nodes/self", status: 401, code: cove.Unauthenticated},
				{name: "renew without a certificate", method: "POST", pattern: "/api/v1/nodes/self/renew", body: func() string { return `{"csr":""}` }, status: 401, code: cove.Unauthenticated},
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
			v.runSteps(t, steps)
		})
	}
}
