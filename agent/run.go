package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/sandbox"
)

// runAlgorithm runs the algorithm over the inputs with the driver of its
// kind and maps how it ended to the run's failure reasons.
func (r *run) runAlgorithm(ctx context.Context, m *computation.Manifest) (sandbox.Result, error) {
	a := m.Algorithm
	name := computation.DriverFor(a.Kind)
	d, ok := r.cfg.Drivers[name]
	if !ok {
		return sandbox.Result{}, fail(computation.Internal, nil,
			fmt.Sprintf("this node has no %s driver for a %s algorithm", name, a.Kind))
	}
	if !slices.Contains(d.Kinds(), a.Kind) {
		return sandbox.Result{}, fail(computation.InvalidAlgorithm, nil,
			fmt.Sprintf("algorithm kind %q is not run by any driver", a.Kind))
	}
	inputs := make([]sandbox.Input, 0, len(m.Datasets))
	for _, ds := range m.Datasets {
		inputs = append(inputs, sandbox.Input{Name: ds.Name, Dir: filepath.Join(r.ws.inputs, ds.Name)})
	}
	spec := sandbox.Spec{
		RunID:           r.id,
		Algorithm:       filepath.Join(r.ws.algorithm, a.FileName),
		Kind:            a.Kind,
		AlgorithmSHA256: a.SHA256,
		Args:            a.Args,
		Env:             map[string]string{},
		Inputs:          inputs,
		OutputDir:       r.ws.outputs,
		Limits: sandbox.Limits{
			CPUs:        m.Limits.CPUs,
			MemoryBytes: m.Limits.MemoryBytes,
			DiskBytes:   m.Limits.DiskBytes,
			Duration:    time.Duration(m.Limits.MaxDurationSeconds) * time.Second,
		},
		Network: m.Network,
		Stdout:  r.logs.writer(streamStdout),
		Stderr:  r.logs.writer(streamStderr),
	}
	r.log.Info("running", "driver", name, "kind", a.Kind)
	res, err := d.Run(ctx, spec)
	r.logs.endLines() // a last line without a newline is still a line
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, fail(computation.Internal, err, "the sandbox failed: "+cove.ErrorMessage(err))
	}
	r.log.Info("algorithm ended", "exit", res.ExitCode, "failure", res.Failure,
		"cpu", res.CPUTime, "peak_memory", res.PeakMemory, "wall", res.Wall)

	detail := func(def string) string {
		if res.Detail != "" {
			return res.Detail
		}
		return def
	}
	switch res.Failure {
	case sandbox.FailureNone:
	case sandbox.FailureTimeout:
		return res, fail(computation.Timeout, nil, detail("the algorithm ran out of time"))
	case sandbox.FailureOOM:
		return res, fail(computation.OOM, nil, detail("the algorithm ran out of memory"))
	case sandbox.FailureDiskFull:
		return res, fail(computation.DiskFull, nil, detail("the algorithm wrote more than its disk limit"))
	case sandbox.FailureInvalid:
		return res, fail(computation.InvalidAlgorithm, nil, detail("the algorithm cannot be run"))
	case sandbox.FailureCanceled:
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, fail(computation.Internal, nil, "the node stopped the sandbox")
	default:
		return res, fail(computation.Internal, nil, fmt.Sprintf("the sandbox reported an unknown failure %q", res.Failure))
	}
	if res.ExitCode != 0 {
		code := res.ExitCode
		f := fail(computation.AlgorithmError, nil, fmt.Sprintf("the algorithm exited with status %d", code))
		f.exitCode = &code
		return res, f
	}
	return res, nil
}
