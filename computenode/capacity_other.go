//go:build !linux

package computenode

import (
	"runtime"

	"github.com/covecompute/cove/runproto"
)

// hostResources returns every CPU; memory and disk are known on Linux
// only, so elsewhere the operator gives them with --memory and --disk.
func hostResources(string) runproto.Resources {
	return runproto.Resources{CPUs: float64(runtime.NumCPU())}
}
