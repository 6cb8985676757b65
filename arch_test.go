package cove_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// domains are the packages that hold business rules. They may import the
// standard library, the root package and each other, never an adapter's
// technology, so the rules can be read and tested without any of it.
var domains = []string{"", "audit", "authz", "identity", "workspace", "sandbox", "catalog", "computation", "scheduler", "node", "runproto", "ca"}

// forbidden are the imports that make a package an adapter.
var forbidden = []string{
	"net/http",
	"database/sql",
	"github.com/nats-io/",
	"github.com/openfga/",
	"github.com/tetratelabs/wazero",
	"github.com/jackc/pgx",
	"modernc.org/sqlite",
	"github.com/covecompute/cove/sqlstore",
	"github.com/covecompute/cove/httpapi",
	"github.com/covecompute/cove/natsbus",
	"github.com/covecompute/cove/fga",
	"github.com/covecompute/cove/app",
	"github.com/covecompute/cove/blob",
	"github.com/covecompute/cove/dispatch",
	"github.com/covecompute/cove/agent",
	"github.com/covecompute/cove/computenode",
	"github.com/covecompute/cove/driver",
}

func TestDomainsImportNoAdapters(t *testing.T) {
	const module = "github.com/covecompute/cove"
	for _, d := range domains {
		pkg := module
		if d != "" {
			pkg += "/" + d
		}
		out, err := exec.Command("go", "list", "-json", "-deps=false", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		var info struct{ Deps []string }
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatal(err)
		}
		for _, dep := range info.Deps {
			for _, f := range forbidden {
				// Standard library entries match exactly: database/sql/driver,
				// which google/uuid imports for its Valuer method, is only
				// interfaces. Module entries match as prefixes.
				module := strings.Contains(f, ".")
				if dep == f || module && (strings.HasPrefix(dep, f+"/") || strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
					t.Errorf("domain package %s depends on %s (directly or through another package)", pkg, dep)
				}
			}
		}
	}
}

// TestPackagesAreDocumented keeps every package's purpose written down.
func TestPackagesAreDocumented(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{.Doc}}", "./...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(line, " ")
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no package doc comment", path)
		}
	}
}
