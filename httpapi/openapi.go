package httpapi

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"strings"

	"github.com/invopop/jsonschema"
)

// Version of the API document.
const apiVersion = "1.0.0"

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// buildOpenAPI generates the OpenAPI 3.1 document from the route table.
// Schemas are reflected from the Go types the handlers decode and encode;
// OpenAPI 3.1 uses JSON Schema 2020-12, which is what the reflector emits.
func (s *Server) buildOpenAPI() []byte {
	ref := &jsonschema.Reflector{DoNotReference: true, Anonymous: true}
	schema := func(t reflect.Type) any {
		sc := ref.ReflectFromType(t)
		sc.Version = ""
		return sc
	}
	errResp := map[string]any{"$ref": "#/components/responses/Error"}
	paths := map[string]map[string]any{}
	for _, rt := range s.routes {
		op := map[string]any{
			"operationId": operationID(rt.method, rt.path),
			"summary":     rt.summary,
			"tags":        []string{rt.tag},
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
		}
		if rt.list {
			params = append(params,
				map[string]any{"name": "limit", "in": "query", "description": "page size, 1 to 500, default 50", "schema": map[string]any{"type": "integer", "minimum": 1, "maximum": 500}},
				map[string]any{"name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": map[string]string{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, map[string]any{"name": q.name, "in": "query", "description": q.doc, "schema": map[string]string{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		binary := map[string]any{"type": "string", "format": "binary"}
		if rt.in != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": schema(rt.in)}}}
		}
		if rt.rawIn != "" {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{rt.rawIn: map[string]any{"schema": binary}}}
		}
		ok := map[string]any{"description": http.StatusText(rt.status)}
		if rt.out != nil {
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": schema(rt.out)}}
		}
		if rt.rawOut != "" {
			ok["content"] = map[string]any{rt.rawOut: map[string]any{"schema": binary}}
		}
		op["responses"] = map[string]any{itoa(rt.status): ok, "default": errResp}
		switch {
		case rt.public:
			op["security"] = []any{}
		case rt.peer:
			op["security"] = []any{map[string]any{"nodeCertificate": []string{}}}
		}
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		paths[rt.path][strings.ToLower(rt.method)] = op
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "Cove API",
			"version":     apiVersion,
			"description": "Confidential compute-to-data. Authenticate with 'Authorization: Bearer <access token or personal access token>'. Every error has the shape of the Error schema.",
		},
		"security": []any{map[string]any{"bearer": []string{}}},
		"paths":    paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"bearer":          map[string]any{"type": "http", "scheme": "bearer"},
				"nodeCertificate": map[string]any{"type": "mutualTLS", "description": "a compute node's client certificate from Cove's certificate authority"},
			},
			"schemas": map[string]any{"Error": schema(reflect.TypeFor[ErrorBody]())},
			"responses": map[string]any{"Error": map[string]any{
				"description": "An error; see the code",
				"content":     map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}},
			}},
		},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err) // only plain maps and reflected schemas: cannot fail
	}
	return b
}

// operationID turns "GET /api/v1/workspaces/{id}" into "getWorkspacesId".
func operationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	for _, part := range strings.Split(strings.TrimPrefix(path, "/api/v1/"), "/") {
		part = strings.Trim(part, "{}")
		for _, w := range strings.Split(part, "_") {
			if w != "" {
				b.WriteString(strings.ToUpper(w[:1]) + w[1:])
			}
		}
	}
	return b.String()
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
