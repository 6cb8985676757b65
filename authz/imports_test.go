package authz_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps authz a domain package: the standard library and the
// cove root only, and none of the standard library's I/O adapters, so no
// database, network or OpenFGA type can leak into the services' contract.
func TestImports(t *testing.T) {
	forbidden := map[string]bool{"net/http": true, "database/sql": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			stdlib := !strings.Contains(first, ".")
			if forbidden[path] || !stdlib && path != "github.com/covecompute/cove" {
				t.Errorf("%s imports %s; authz may import only the standard library and github.com/covecompute/cove", name, path)
			}
		}
	}
}
