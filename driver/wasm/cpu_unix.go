//go:build unix && !linux

package wasm

import (
	"syscall"
	"time"
)

// threadCPU is false: outside Linux no per-thread clock is used, so the
// time is the whole process's and a CPU cap is not enforced from it.
const threadCPU = false

// cpuMeter approximates a run's CPU time by the process's user and system
// time, which includes every other goroutine: exact only when one run is
// alone on the node, as in development.
type cpuMeter struct{ start time.Duration }

func startCPU() *cpuMeter { return &cpuMeter{start: processCPU()} }

func (m *cpuMeter) used() time.Duration { return processCPU() - m.start }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
