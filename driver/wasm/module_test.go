package wasm_test

import (
	"os"
	"path/filepath"
	"testing"
)

// Hand-assembled modules for what Go programs cannot do: trap, loop
// without any runtime, import from outside WASI.

// Function bodies: no locals, then the code.
var (
	unreachableBody = []byte{0x00, 0x00, 0x0b}                         // unreachable; end
	loopBody        = []byte{0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b} // loop; br 0; end; end
	emptyBody       = []byte{0x00, 0x0b}                               // end
)

// importModule imports env.f and does nothing else.
var importModule = []byte{
	0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00,
	0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
	0x02, 0x09, 0x01, 0x03, 'e', 'n', 'v', 0x01, 'f', 0x00, 0x00, // import env.f, type 0
}

// MustWriteModule writes a module whose exported _start has body and
// returns its path.
func MustWriteModule(tb testing.TB, body []byte) string {
	tb.Helper()
	m := []byte{
		0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
		0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00, // export _start
		0x0a, byte(len(body) + 2), 0x01, byte(len(body)), // code section, one body
	}
	m = append(m, body...)
	path := filepath.Join(tb.TempDir(), "module.wasm")
	if err := os.WriteFile(path, m, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}
