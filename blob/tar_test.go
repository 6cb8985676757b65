package blob_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
)

// file is one entry of a test tree: a directory when its name ends in "/",
// a symbolic link when link is set, a regular file otherwise.
type file struct {
	name, content, link string
	mode                os.FileMode
}

func mustTree(t testing.TB, dir string, files []file, mtime time.Time) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		var err error
		switch {
		case strings.HasSuffix(f.name, "/"):
			err = os.MkdirAll(p, 0o700)
		case f.link != "":
			err = os.Symlink(f.link, p)
		default:
			if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
				err = os.WriteFile(p, []byte(f.content), f.mode)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Times last: writing a file changes its directory's time.
	for i := len(files) - 1; i >= 0; i-- {
		if files[i].link == "" {
			os.Chtimes(filepath.Join(dir, filepath.FromSlash(files[i].name)), mtime, mtime)
		}
	}
}

func mustTar(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := blob.WriteTar(&buf, dir); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// snapshot describes a tree as name → kind, mode and content, following
// nothing, so that trees can be compared whole.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + digest(b)
		}
		got[filepath.ToSlash(rel)] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestTarRoundTrip(t *testing.T) {
	big := string(randomBytes(200_000))
	files := []file{
		{name: "b.txt", content: "bee", mode: 0o600},
		{name: "a/x.bin", content: big, mode: 0o755},
		{name: "a/deeper/y", content: "", mode: 0o640},
		{name: "empty/"},
		{name: "a.txt", content: "sorts after a/ in a walk, before it as a string", mode: 0o644},
		{name: "link", link: "a/x.bin"},
	}
	src := t.TempDir()
	mustTree(t, src, files, time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))

	first := mustTar(t, src)
	if second := mustTar(t, src); !bytes.Equal(first, second) {
		t.Fatal("two archives of the same directory differ")
	}

	// The same names and contents with other times and modes, and the link
	// replaced by a copy of its target, archive to the same bytes.
	other := t.TempDir()
	files[len(files)-1] = file{name: "link", content: big, mode: 0o600}
	for i := range files {
		files[i].mode |= 0o400
	}
	mustTree(t, other, files, time.Now())
	if !bytes.Equal(first, mustTar(t, other)) {
		t.Fatal("archives of equal directories differ")
	}

	out := filepath.Join(t.TempDir(), "out")
	if err := blob.ExtractTar(bytes.NewReader(first), out, int64(len(first))); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"a":          "drwxr-xr-x",
		"a/deeper":   "drwxr-xr-x",
		"a/deeper/y": "-rw-r--r-- " + digest(nil),
		"a/x.bin":    "-rw-r--r-- " + digest([]byte(big)),
		"a.txt":      "-rw-r--r-- " + digest([]byte(files[4].content)),
		"b.txt":      "-rw-r--r-- " + digest([]byte("bee")),
		"empty":      "drwxr-xr-x",
		"link":       "-rw-r--r-- " + digest([]byte(big)),
	}
	got := snapshot(t, out)
	if len(got) != len(want) {
		t.Fatalf("extracted %v, want %v", got, want)
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %q, want %q", name, got[name], w)
		}
	}
	// Extracting and archiving again changes nothing.
	if !bytes.Equal(first, mustTar(t, out)) {
		t.Fatal("archive of the extracted directory differs")
	}
}

func TestTarEmptyDirectory(t *testing.T) {
	archive := mustTar(t, t.TempDir())
	out := filepath.Join(t.TempDir(), "out")
	if err := blob.ExtractTar(bytes.NewReader(archive), out, int64(len(archive))); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, out); len(got) != 0 {
		t.Fatalf("extracted %v from an empty archive", got)
	}
}

func TestWriteTarRejects(t *testing.T) {
	for name, setup := range map[string]func(t *testing.T, dir, outside string){
		"SymlinkOutside": func(t *testing.T, dir, outside string) {
			mustSymlink(t, "../outside/secret", filepath.Join(dir, "ln"))
		},
		"SymlinkAbsolute": func(t *testing.T, dir, outside string) {
			mustSymlink(t, filepath.Join(outside, "secret"), filepath.Join(dir, "ln"))
		},
		"SymlinkDeepOutside": func(t *testing.T, dir, outside string) {
			mustTree(t, dir, []file{{name: "sub/"}}, time.Now())
			mustSymlink(t, "../../outside/secret", filepath.Join(dir, "sub", "ln"))
		},
		"SymlinkDangling": func(t *testing.T, dir, outside string) {
			mustSymlink(t, "nothing-here", filepath.Join(dir, "ln"))
		},
		"SymlinkToDirectory": func(t *testing.T, dir, outside string) {
			mustTree(t, dir, []file{{name: "sub/"}}, time.Now())
			mustSymlink(t, "sub", filepath.Join(dir, "ln"))
		},
		"Fifo": func(t *testing.T, dir, outside string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir, outside := filepath.Join(parent, "dir"), filepath.Join(parent, "outside")
			mustTree(t, parent, []file{{name: "dir/"}, {name: "outside/secret", content: "s3cr3t", mode: 0o600}}, time.Now())
			setup(t, dir, outside)
			var buf bytes.Buffer
			err := blob.WriteTar(&buf, dir)
			if cove.ErrorCode(err) != cove.Invalid {
				t.Fatalf("WriteTar = %v, want invalid", err)
			}
			if bytes.Contains(buf.Bytes(), []byte("s3cr3t")) {
				t.Fatal("the archive holds a file from outside the directory")
			}
		})
	}
}

func mustSymlink(t testing.TB, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

// entry is one raw tar entry for building hostile archives.
type entry struct {
	hdr  tar.Header
	body string
}

func reg(name, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func rawArchive(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractTarHostile(t *testing.T) {
	many := make([]entry, 300)
	for i := range many {
		many[i] = reg("f"+strings.Repeat("x", i%50)+string(rune('a'+i/50)), "")
	}
	valid := rawArchive(t, reg("ok", "fine"))
	// A cut between entries looks like a complete archive to tar; only a
	// Verify of the blob can catch it. A cut inside an entry must fail.
	long := rawArchive(t, reg("long", strings.Repeat("l", 2000)))
	for _, tc := range []struct {
		name     string
		archive  []byte
		maxBytes int64
		code     cove.Code
	}{
		{"DotDot", rawArchive(t, reg("../evil", "x")), 1 << 20, cove.Invalid},
		{"DotDotDeep", rawArchive(t, reg("a/../../evil", "x")), 1 << 20, cove.Invalid},
		{"DotDotInside", rawArchive(t, reg("a/../evil", "x")), 1 << 20, cove.Invalid},
		{"DotDotDir", rawArchive(t, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "../evil/", Mode: 0o755}}), 1 << 20, cove.Invalid},
		{"Absolute", rawArchive(t, reg("/tmp/cove-evil", "x")), 1 << 20, cove.Invalid},
		{"Symlink", rawArchive(t, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "ln", Linkname: "/etc/passwd"}}), 1 << 20, cove.Invalid},
		{"SymlinkThenWrite", rawArchive(t,
			entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "ln", Linkname: ".."}},
			reg("ln/evil", "x")), 1 << 20, cove.Invalid},
		{"Hardlink", rawArchive(t, entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "hl", Linkname: "/etc/passwd"}}), 1 << 20, cove.Invalid},
		{"CharDevice", rawArchive(t, entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3}}), 1 << 20, cove.Invalid},
		{"Fifo", rawArchive(t, entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "pipe"}}), 1 << 20, cove.Invalid},
		{"Duplicate", rawArchive(t, reg("f", "one"), reg("f", "two")), 1 << 20, cove.Invalid},
		{"FileThenDir", rawArchive(t, reg("f", "one"), reg("f/g", "two")), 1 << 20, cove.Invalid},
		{"RootAsFile", rawArchive(t, reg(".", "x")), 1 << 20, cove.Invalid},
		{"Oversize", rawArchive(t, reg("big", strings.Repeat("z", 2<<20))), 1 << 20, cove.TooLarge},
		{"TooManyEntries", rawArchive(t, many...), 100 * 512, cove.TooLarge},
		{"TrailingJunk", append(bytes.Clone(valid), make([]byte, 2<<20)...), 1 << 20, cove.TooLarge},
		{"Truncated", long[:1000], 1 << 20, cove.Invalid},
		{"TruncatedHeader", long[:300], 1 << 20, cove.Invalid},
		{"NotAnArchive", randomBytes(4096), 1 << 20, cove.Invalid},
		{"NoLimit", valid, 0, cove.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			err := blob.ExtractTar(bytes.NewReader(tc.archive), filepath.Join(parent, "x"), tc.maxBytes)
			if cove.ErrorCode(err) != tc.code {
				t.Fatalf("ExtractTar = %v, want %s", err, tc.code)
			}
			if got := dirNames(t, parent); len(got) > 1 || len(got) == 1 && got[0] != "x" {
				t.Fatalf("ExtractTar wrote %v next to its directory", got)
			}
			if _, err := os.Lstat("/tmp/cove-evil"); err == nil {
				t.Fatal("ExtractTar wrote an absolute path")
			}
		})
	}
}

// TestExtractTarPreexistingSymlink extracts into a directory that already
// holds a link out of it: nothing may be written through the link.
func TestExtractTarPreexistingSymlink(t *testing.T) {
	parent := t.TempDir()
	dest, outside := filepath.Join(parent, "x"), filepath.Join(parent, "outside")
	mustTree(t, parent, []file{{name: "x/"}, {name: "outside/"}}, time.Now())
	mustSymlink(t, "../outside", filepath.Join(dest, "out"))
	mustSymlink(t, "../outside/f", filepath.Join(dest, "f"))

	for _, archive := range [][]byte{
		rawArchive(t, reg("out/evil", "x")),
		rawArchive(t, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "out/sub/", Mode: 0o755}}),
		rawArchive(t, reg("f", "x")),
	} {
		if err := blob.ExtractTar(bytes.NewReader(archive), dest, 1<<20); err == nil {
			t.Fatal("ExtractTar wrote through a symbolic link")
		}
		if got := dirNames(t, outside); len(got) != 0 {
			t.Fatalf("ExtractTar wrote %v outside its directory", got)
		}
	}
}

func TestExtractTarIgnoresArchiveModes(t *testing.T) {
	archive := rawArchive(t,
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./d/", Mode: 0o700}},
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./d/secret", Mode: 0o4777, Size: 1}, body: "s"},
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./private", Mode: 0o600, Size: 1}, body: "p"},
	)
	out := filepath.Join(t.TempDir(), "out")
	if err := blob.ExtractTar(bytes.NewReader(archive), out, 1<<20); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"d":        "drwxr-xr-x",
		"d/secret": "-rw-r--r-- " + digest([]byte("s")),
		"private":  "-rw-r--r-- " + digest([]byte("p")),
	}
	got := snapshot(t, out)
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %q, want %q", name, got[name], w)
		}
	}
}

// TestExtractTarVerifies checks that a Verify around the archive gets to
// check it whole, though the archive ends before the blob does.
func TestExtractTarVerifies(t *testing.T) {
	archive := append(rawArchive(t, reg("f", "content")), make([]byte, 8192)...)
	sum := digest(archive)

	err := blob.ExtractTar(blob.Verify(bytes.NewReader(archive), sum), filepath.Join(t.TempDir(), "ok"), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}

	tampered := bytes.Clone(archive)
	tampered[len(tampered)-1] = 1 // in the padding, after the archive's end
	err = blob.ExtractTar(blob.Verify(bytes.NewReader(tampered), sum), filepath.Join(t.TempDir(), "bad"), int64(len(archive)))
	if !errors.Is(err, blob.ErrMismatch) || cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("ExtractTar of a tampered blob = %v, want a mismatch", err)
	}
}
