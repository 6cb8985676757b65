package wasm

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is true where cpuMeter measures the run's own thread, which
// makes the CPU time exact enough to bill and to enforce.
const threadCPU = true

// cpuMeter measures the CPU time of one OS thread: the one a run locks
// while wazero executes the module on it. WebAssembly modules run on the
// calling goroutine and wasip1 has no threads, so that thread's time is
// the module's, plus the WASI calls it makes and any GC assists.
type cpuMeter struct {
	clock int32 // the thread's CPU clock, readable from any thread
	start time.Duration
}

// startCPU must be called on the locked thread it is to measure.
func startCPU() *cpuMeter {
	// The Linux ABI for another thread's CPU clock, as in glibc's
	// pthread_getcpuclockid: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED).
	m := &cpuMeter{clock: int32(^unix.Gettid())<<3 | 4 | 2}
	m.start = m.now()
	return m
}

// used returns the CPU time since startCPU. Any goroutine may call it,
// which the CPU-time watchdog relies on.
func (m *cpuMeter) used() time.Duration { return m.now() - m.start }

func (m *cpuMeter) now() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(m.clock, &ts) != nil {
		return m.start
	}
	return time.Duration(ts.Nano())
}
