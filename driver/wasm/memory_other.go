//go:build !unix

package wasm

import "github.com/tetratelabs/wazero/experimental"

// allocate returns nil: the Go heap holds the module's memory.
func (*memory) allocate(uint64) experimental.LinearMemory { return nil }
