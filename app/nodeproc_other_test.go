//go:build !linux

package app_test

import "os/exec"

// dieWithTest does nothing where the kernel cannot kill a child with its
// parent; the tests' cleanups kill the node processes they start.
func dieWithTest(*exec.Cmd) {}
