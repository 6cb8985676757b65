package blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// benchSize is large enough that per-Put costs (temp file, fsync, rename)
// show against the streaming cost, as they would for a real dataset.
const benchSize = 64 << 20

func benchData() []byte {
	b := make([]byte, benchSize)
	rand.NewChaCha8([32]byte{7}).Read(b)
	return b
}

// BenchmarkPutFS measures FS.Put end to end: hashing, writing, fsync and
// rename. Compare its MB/s with BenchmarkSHA256 to see what storing costs
// on top of hashing.
func BenchmarkPutFS(b *testing.B) {
	data := benchData()
	s := mustFS(b, b.TempDir())
	ctx := context.Background()
	b.SetBytes(benchSize)
	var i uint64
	for b.Loop() {
		// New content each time, or every Put after the first would be a
		// deduplicated no-op.
		binary.LittleEndian.PutUint64(data, i)
		i++
		info, err := s.Put(ctx, bytes.NewReader(data), "")
		if err != nil {
			b.Fatal(err)
		}
		// Keeps the disk use flat; an unlink is cheap next to 64 MiB.
		if err := s.Delete(ctx, info.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256 is the floor for BenchmarkPutFS: hashing the same bytes
// in memory, as sha256sum does, without storing them.
func BenchmarkSHA256(b *testing.B) {
	data := benchData()
	b.SetBytes(benchSize)
	for b.Loop() {
		h := sha256.New()
		h.Write(data)
		h.Sum(nil)
	}
}
