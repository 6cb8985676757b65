//go:build !unix

package computenode

// lockDataDir does nothing where flock is missing: run one node per data
// directory.
func lockDataDir(string) (func(), error) { return func() {}, nil }
