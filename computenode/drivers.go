package computenode

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/driver/process"
	"github.com/covecompute/cove/driver/wasm"
	"github.com/covecompute/cove/sandbox"
)

// DriverNames are the drivers a node can open.
var DriverNames = []string{"wasm", "process"}

// openDrivers opens the drivers named, or when names is empty every driver
// this host can run: wasm always, process where bubblewrap works. A driver
// named explicitly that cannot run here is an error. The functions returned
// close what was opened.
func openDrivers(dataDir string, names []string, log *slog.Logger) (map[string]sandbox.Driver, []func(context.Context) error, error) {
	explicit := len(names) > 0
	if !explicit {
		names = DriverNames
	}
	drivers := map[string]sandbox.Driver{}
	var closers []func(context.Context) error
	fail := func(err error) (map[string]sandbox.Driver, []func(context.Context) error, error) {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		for _, c := range closers {
			_ = c(ctx)
		}
		return nil, nil, err
	}
	for _, name := range names {
		if _, dup := drivers[name]; dup {
			continue
		}
		switch name {
		case "wasm":
			d, err := wasm.New(wasm.Config{CacheDir: filepath.Join(dataDir, "wasm-cache")})
			if err != nil {
				return fail(err)
			}
			drivers[name] = d
			closers = append(closers, d.Close)
		case "process":
			d := process.New(process.Config{})
			if err := d.Available(); err != nil {
				if explicit {
					return fail(&cove.Error{Code: cove.Unavailable,
						Message: "the process driver cannot run on this host: " + cove.ErrorMessage(err), Err: err})
				}
				log.Info("process driver not available; bin and python algorithms will not run here", "why", cove.ErrorMessage(err))
				continue
			}
			drivers[name] = d
		default:
			return fail(cove.Errorf(cove.Invalid, "unknown driver %q: the drivers are %v", name, DriverNames))
		}
	}
	if !slices.ContainsFunc(names, func(n string) bool { return drivers[n] != nil }) {
		return fail(cove.Errorf(cove.Invalid, "no sandbox driver can run on this host"))
	}
	return drivers, closers, nil
}
