//go:build !unix

package wasm

import "time"

// threadCPU is false: this platform has no CPU clock the driver reads.
const threadCPU = false

// cpuMeter reports no CPU time where the platform gives none cheaply.
type cpuMeter struct{}

func startCPU() *cpuMeter { return &cpuMeter{} }

func (*cpuMeter) used() time.Duration { return 0 }
