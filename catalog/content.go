package catalog

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/covecompute/cove"
)

// Content is checked while it streams to the blob store, never after: the
// reader below fails before the end of the content when a check fails, so
// the store keeps nothing, and nothing is ever stored, then found bad, then
// deleted (which could race with another entry holding the same bytes).

// wasmMagic is the start of every WebAssembly binary module: "\0asm" and
// version 1.
var wasmMagic = []byte("\x00asm\x01\x00\x00\x00")

// check inspects content as it passes. write sees every byte in order and
// end is called once at its end; either returns why the content is
// refused. abort releases what the check holds when the content stops
// before its end.
type check interface {
	write(p []byte) error
	end(n int64) error
	abort()
}

// checkFor returns the check of a dataset format or an algorithm kind.
func checkFor(formatOrKind string) check {
	switch formatOrKind {
	case FormatTar:
		return newTarCheck()
	case KindWasm:
		return &wasmCheck{}
	case KindPython:
		return &textCheck{}
	case KindBin:
		return nonEmpty{}
	}
	return anyContent{} // FormatFile
}

// checkedReader passes r through a check and a size limit.
type checkedReader struct {
	r     io.Reader
	check check
	max   int64
	n     int64
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n += int64(n)
		if c.n > c.max {
			return 0, cove.Errorf(cove.TooLarge, "the content is larger than %d bytes", c.max)
		}
		if cerr := c.check.write(p[:n]); cerr != nil {
			return 0, cerr
		}
	}
	if err == io.EOF {
		if cerr := c.check.end(c.n); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}

// anyContent accepts any content, even none: a dataset file may be empty.
type anyContent struct{}

func (anyContent) write([]byte) error { return nil }
func (anyContent) end(int64) error    { return nil }
func (anyContent) abort()             {}

// nonEmpty requires at least one byte, as an executable does.
type nonEmpty struct{}

func (nonEmpty) write([]byte) error { return nil }
func (nonEmpty) end(n int64) error {
	if n == 0 {
		return cove.Errorf(cove.Invalid, "the content is empty; a binary needs at least one byte")
	}
	return nil
}
func (nonEmpty) abort() {}

// wasmCheck requires the WebAssembly magic and version at the start.
type wasmCheck struct {
	head []byte
	done bool
}

func (c *wasmCheck) write(p []byte) error {
	if c.done {
		return nil
	}
	c.head = append(c.head, p[:min(len(p), len(wasmMagic)-len(c.head))]...)
	if !bytes.HasPrefix(wasmMagic, c.head) {
		return notWasm()
	}
	c.done = len(c.head) == len(wasmMagic)
	return nil
}

func (c *wasmCheck) end(int64) error {
	if !c.done {
		return notWasm()
	}
	return nil
}

func (*wasmCheck) abort() {}

func notWasm() error {
	return cove.Errorf(cove.Invalid, "the content is not a WebAssembly module: it does not start with \\0asm and version 1").
		WithDetails(cove.Detail{Field: "kind", Message: "not WebAssembly"})
}

// textCheck requires non-empty UTF-8 text without NUL bytes, as a Python
// script is. A character may be split between two writes; its first bytes
// wait in tail.
type textCheck struct {
	tail []byte
	off  int64 // bytes checked before tail
}

func (c *textCheck) write(p []byte) error {
	b := append(c.tail, p...)
	i := 0
	for i < len(b) {
		if b[i] == 0 {
			return notText(c.off + int64(i))
		}
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			if !utf8.FullRune(b[i:]) {
				break // wait for the rest of the character
			}
			return notText(c.off + int64(i))
		}
		i += size
	}
	c.off += int64(i)
	c.tail = append(c.tail[:0], b[i:]...)
	return nil
}

func (c *textCheck) end(n int64) error {
	if len(c.tail) > 0 {
		return notText(c.off)
	}
	if n == 0 {
		return cove.Errorf(cove.Invalid, "the content is empty; a Python script needs at least one line")
	}
	return nil
}

func (*textCheck) abort() {}

func notText(at int64) error {
	return cove.Errorf(cove.Invalid, "the content is not UTF-8 text (byte %d); a Python script must be", at).
		WithDetails(cove.Detail{Field: "kind", Message: "not UTF-8 text"})
}

// tarCheck reads the content as a tar archive in a goroutine, fed through
// a pipe, and refuses what blob.ExtractTar would refuse. The pipe makes
// every write wait until the archive reader has taken it, so nothing piles
// up in memory.
type tarCheck struct {
	pw     *io.PipeWriter
	done   chan error
	result error
	over   bool
}

// errStopped ends the archive reader when the content stops early.
var errStopped = errors.New("upload stopped")

func newTarCheck() *tarCheck {
	pr, pw := io.Pipe()
	c := &tarCheck{pw: pw, done: make(chan error, 1)}
	go func() {
		err := checkTar(pr)
		// A refusal makes the next write fail; success leaves the pipe
		// read to its end.
		pr.CloseWithError(errStopped)
		c.done <- err
	}()
	return c
}

func (c *tarCheck) write(p []byte) error {
	if _, err := c.pw.Write(p); err != nil {
		if verdict := c.finish(); verdict != nil {
			return verdict
		}
		return cove.Wrap(err, "checking the archive failed")
	}
	return nil
}

func (c *tarCheck) end(int64) error {
	c.pw.Close()
	return c.finish()
}

func (c *tarCheck) abort() {
	c.pw.CloseWithError(errStopped)
	c.finish()
}

// finish waits for the archive reader and returns its verdict.
func (c *tarCheck) finish() error {
	if !c.over {
		c.over = true
		c.result = <-c.done
	}
	return c.result
}

// maxTarEntries bounds the names an archive check remembers.
const maxTarEntries = 1 << 20

// checkTar reads the tar archive r to its end and returns Invalid when
// blob.ExtractTar would refuse it: it accepts only regular files and
// directories whose names stay inside the extraction directory, each name
// once, never both a file and a directory. What follows the end of the
// archive is read and ignored, as ExtractTar does.
func checkTar(r io.Reader) error {
	tr := tar.NewReader(r)
	files, dirs := map[string]bool{}, map[string]bool{}
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if _, err := io.Copy(io.Discard, r); err != nil && !errors.Is(err, errStopped) {
				return badArchive(err)
			}
			return nil
		}
		if err != nil {
			return badArchive(err)
		}
		if n >= maxTarEntries {
			return cove.Errorf(cove.Invalid, "the archive has more than %d entries", maxTarEntries)
		}
		name, ok := localName(hdr.Name)
		if !ok {
			return cove.Errorf(cove.Invalid, "archive entry %q is not a relative path inside the directory", hdr.Name)
		}
		var parents []string
		for p := path.Dir(name); p != "."; p = path.Dir(p) {
			parents = append(parents, p)
		}
		if name != "." && hdr.Typeflag == tar.TypeDir {
			parents = append(parents, name)
		}
		for _, p := range parents {
			if files[p] {
				return cove.Errorf(cove.Invalid, "archive entry %q is both a file and a directory", p)
			}
			dirs[p] = true
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
		case tar.TypeReg:
			switch {
			case name == ".":
				return cove.Errorf(cove.Invalid, "an archive entry names the directory itself as a file")
			case files[name]:
				return cove.Errorf(cove.Invalid, "archive entry %q appears twice", name)
			case dirs[name]:
				return cove.Errorf(cove.Invalid, "archive entry %q is both a file and a directory", name)
			}
			files[name] = true
		default:
			return cove.Errorf(cove.Invalid, "archive entry %q is neither a regular file nor a directory", hdr.Name)
		}
	}
}

// localName is blob's rule for names in an archive: relative, no "..",
// no NUL, and inside the directory once cleaned.
func localName(name string) (string, bool) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", false
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", false
		}
	}
	clean := path.Clean(name)
	return clean, filepath.IsLocal(filepath.FromSlash(clean))
}

// badArchive keeps the stop of an upload as it is, and reports anything
// else as a malformed archive.
func badArchive(err error) error {
	if errors.Is(err, errStopped) {
		return err
	}
	return &cove.Error{Code: cove.Invalid, Message: "the content is not a valid tar archive, or is cut off", Err: err}
}
