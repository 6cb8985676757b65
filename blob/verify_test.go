package blob_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
)

func TestVerify(t *testing.T) {
	data := randomBytes(300_000)
	sum := digest(data)
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x01

	t.Run("Match", func(t *testing.T) {
		got, err := io.ReadAll(blob.Verify(bytes.NewReader(data), sum))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("ReadAll = %d bytes, %v", len(got), err)
		}
	})
	// Readers that hand over data and EOF together, or a byte at a time,
	// must be checked just the same.
	t.Run("MatchDataEOF", func(t *testing.T) {
		if _, err := io.ReadAll(blob.Verify(iotest.DataErrReader(bytes.NewReader(data)), sum)); err != nil {
			t.Fatal(err)
		}
	})
	for name, r := range map[string]io.Reader{
		"FlippedByte":      bytes.NewReader(flipped),
		"FlippedByteSlow":  iotest.OneByteReader(bytes.NewReader(flipped)),
		"FlippedDataEOF":   iotest.DataErrReader(bytes.NewReader(flipped)),
		"Truncated":        bytes.NewReader(data[:len(data)-1]),
		"Extended":         io.MultiReader(bytes.NewReader(data), bytes.NewReader([]byte{0})),
		"EmptyForNonEmpty": bytes.NewReader(nil),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := io.ReadAll(blob.Verify(r, sum))
			mustMismatch(t, err)
		})
	}
	t.Run("MismatchIsSticky", func(t *testing.T) {
		v := blob.Verify(bytes.NewReader(flipped), sum)
		io.ReadAll(v)
		if _, err := v.Read(make([]byte, 1)); !errors.Is(err, blob.ErrMismatch) {
			t.Fatalf("Read after mismatch = %v, want ErrMismatch again", err)
		}
	})
	t.Run("InvalidDigest", func(t *testing.T) {
		_, err := io.ReadAll(blob.Verify(bytes.NewReader(data), "../../etc"))
		if cove.ErrorCode(err) != cove.Invalid || errors.Is(err, blob.ErrMismatch) {
			t.Fatalf("err = %v, want invalid digest", err)
		}
	})
	t.Run("ReaderErrorPassesThrough", func(t *testing.T) {
		errCut := errors.New("cut")
		_, err := io.ReadAll(blob.Verify(io.MultiReader(bytes.NewReader(data[:10]), failingReader{errCut}), sum))
		if err != errCut {
			t.Fatalf("err = %v, want the reader's own error", err)
		}
	})
}

func TestValidSHA256(t *testing.T) {
	valid := digest([]byte("v"))
	if !blob.ValidSHA256(valid) {
		t.Fatalf("ValidSHA256(%q) = false", valid)
	}
	for _, s := range []string{"", valid[:63], valid + "a", "A" + valid[1:], "g" + valid[1:], "/" + valid[1:], ".." + valid[2:]} {
		if blob.ValidSHA256(s) {
			t.Errorf("ValidSHA256(%q) = true", s)
		}
	}
}
