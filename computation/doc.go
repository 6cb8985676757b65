// Package computation holds computations (an algorithm, datasets, result
// consumers and limits), their canonical manifest, runs and the run state
// machine, run events, and the owners' approvals.
package computation
