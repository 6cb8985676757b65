package wasm

import (
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// memory backs the linear memory of one run and enforces its MemoryBytes.
//
// wazero's own limit (RuntimeConfig.WithMemoryLimitPages) is applied when a
// module is compiled, and one compiled module serves every run whatever its
// limit, so the per-run limit lives here, in the allocator wazero asks each
// time the module grows its memory. Refusing a grow makes memory.grow
// return -1 inside the module, which is how WebAssembly says out of memory;
// refused records it, so the driver reports FailureOOM however the module
// then dies (Go's runtime exits 2, Rust traps, C gets NULL from malloc).
type memory struct {
	limit   uint64
	refused atomic.Bool
	peak    atomic.Uint64

	mu    sync.Mutex
	frees []func() // of the memories allocate mapped
}

var _ experimental.MemoryAllocator = (*memory)(nil)

// Allocate returns the buffer for the module's one linear memory: a
// mapping of its own where the system offers one (memory_unix.go), else a
// slice of the Go heap. wazero caps max at 4 GiB, the most a 32-bit memory
// can address.
func (m *memory) Allocate(_, max uint64) experimental.LinearMemory {
	max = min(max, m.limit)
	if l := m.allocate(max); l != nil {
		return l
	}
	return &linearMemory{m: m, max: max}
}

// track remembers free for release.
func (m *memory) track(free func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frees = append(m.frees, free)
}

// release frees what wazero did not, which it may skip when instantiation
// fails. Call it once the module can run no more.
func (m *memory) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, free := range m.frees {
		free()
	}
	m.frees = nil
}

// sawPeak records size as the peak when it is the largest so far.
func (m *memory) sawPeak(size uint64) {
	for {
		peak := m.peak.Load()
		if size <= peak || m.peak.CompareAndSwap(peak, size) {
			return
		}
	}
}

type linearMemory struct {
	m   *memory
	max uint64
	buf []byte
}

// Reallocate grows the buffer to size bytes, or returns nil when that
// passes the limit. Growth copies into a buffer of at least twice the old
// capacity, so a module that grows page by page copies O(n) bytes in all.
// Bytes past len are never written (linear memory does not shrink), so
// reslicing within capacity needs no clearing.
func (l *linearMemory) Reallocate(size uint64) []byte {
	if size > l.max {
		l.m.refused.Store(true)
		if l.buf != nil {
			return nil
		}
		// A module whose initial memory is already over the limit: wazero
		// cannot take nil here (it would panic), so give it the memory and
		// let the driver stop the run, as refused is set, before the
		// module's code starts.
		l.max = size
	}
	if size <= uint64(cap(l.buf)) {
		l.buf = l.buf[:size]
	} else {
		grown := make([]byte, size, max(size, min(2*uint64(cap(l.buf)), l.max)))
		copy(grown, l.buf)
		l.buf = grown
	}
	l.m.sawPeak(size)
	return l.buf
}

// Free drops the buffer, so a closed module's memory is garbage as soon as
// wazero lets go of it.
func (l *linearMemory) Free() { l.buf = nil }
