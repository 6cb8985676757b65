//go:build unix

package wasm

import (
	"golang.org/x/sys/unix"

	"github.com/tetratelabs/wazero/experimental"
)

// mapped is a linear memory in an anonymous mapping of its own, reserved
// at once up to the run's limit with no access, and opened up as the
// module grows. Growing neither copies nor clears: the kernel hands out
// zeroed pages as the module first touches them. The Go heap never holds
// the module's memory, so the tens of megabytes a Go or Python program
// grows into at start cost no garbage collection, and they return to the
// system the moment the module closes.
type mapped struct {
	m         *memory
	max       uint64
	region    []byte // the whole reservation; nil once unmapped
	committed uint64 // bytes readable and writable from the start
	opened    bool   // Reallocate gave the module its initial memory
	fallback  *linearMemory
}

// allocate reserves max bytes of address space for a module's memory, or
// returns nil when the system refuses, and the Go heap serves instead.
func (m *memory) allocate(max uint64) experimental.LinearMemory {
	if max == 0 {
		return nil
	}
	region, err := unix.Mmap(-1, 0, int(max), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	l := &mapped{m: m, max: max, region: region}
	m.track(l.Free)
	return l
}

// Reallocate opens the region up to size bytes, or returns nil when that
// passes the limit.
func (l *mapped) Reallocate(size uint64) []byte {
	if l.fallback != nil {
		return l.fallback.Reallocate(size)
	}
	if size > l.max {
		if l.opened {
			l.m.refused.Store(true)
			return nil
		}
		// The initial memory is already over the limit: see linearMemory,
		// which takes the module from here.
		l.Free()
		l.fallback = &linearMemory{m: l.m, max: l.max}
		return l.fallback.Reallocate(size)
	}
	if size > l.committed {
		if err := unix.Mprotect(l.region[l.committed:size], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil // the system is out of memory: memory.grow returns -1
		}
		l.committed = size
	}
	l.opened = true
	l.m.sawPeak(size)
	return l.region[:size:size]
}

// Free unmaps the region. wazero calls it when the module closes, and the
// driver once more after the run, for a module that failed to instantiate.
func (l *mapped) Free() {
	if l.fallback != nil {
		l.fallback.Free()
	}
	if l.region != nil {
		_ = unix.Munmap(l.region)
		l.region = nil
	}
}
