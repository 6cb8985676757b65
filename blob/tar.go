package blob

import (
	"archive/tar"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/covecompute/cove"
)

// A directory dataset is stored as one blob: a tar archive of the
// directory. Its digest must depend on the files' names and contents only,
// so WriteTar leaves out everything else a tar can carry (times, owners,
// modes, links). ExtractTar accepts regular files and directories only,
// which is all WriteTar writes.

// Modes of everything in an archive and of everything ExtractTar creates.
// Sandboxes read inputs as whatever user the driver picks, so the modes are
// fixed and readable by all rather than copied from the data owner's disk.
const (
	tarFileMode = 0o644
	tarDirMode  = 0o755
)

// tarEpoch is the modification time of every entry, so that two copies of
// the same files archive to the same bytes.
var tarEpoch = time.Unix(0, 0)

// tarBlock is what ExtractTar charges for every entry on top of its
// content: the size of a tar header. It bounds the number of files and
// directories an archive can make as well as their bytes, and keeps the
// total below the archive's own size, so a caller can pass that as maxBytes.
const tarBlock = 512

// WriteTar writes the files and directories under dir to w as a tar archive
// that depends only on their relative names and contents: entries in
// lexical order, times at the Unix epoch, no owners, files 0644 and
// directories 0755. A symbolic link to a regular file inside dir is
// archived as that file. Any other symbolic link, and any device, socket or
// pipe, makes WriteTar fail with Invalid: the first could leak files from
// outside the dataset, the others have no content to archive. A missing dir
// is NotFound. Errors of w that are *cove.Error are returned unchanged.
func WriteTar(w io.Writer, dir string) error {
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return cove.Errorf(cove.NotFound, "the directory to archive does not exist")
	} else if err != nil {
		return cove.Wrap(err, "opening the directory to archive failed")
	}
	defer root.Close()
	// The root's FS follows symbolic links only while they stay inside dir,
	// even if the directory changes during the walk.
	fsys := root.FS()
	tw := tar.NewWriter(w)
	err = fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return cove.Wrap(err, "reading the directory to archive failed")
		}
		switch t := d.Type(); {
		case name == ".":
			return nil
		case t.IsDir():
			return writeFailed(tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeDir,
				Name:     name + "/",
				Mode:     tarDirMode,
				ModTime:  tarEpoch,
			}))
		case t.IsRegular():
			return writeTarFile(tw, fsys, name)
		case t&fs.ModeSymlink != 0:
			if fi, err := fs.Stat(fsys, name); err != nil || !fi.Mode().IsRegular() {
				return cove.Errorf(cove.Invalid, "%q is a symbolic link that leaves the directory or does not lead to a regular file", name)
			}
			return writeTarFile(tw, fsys, name)
		default:
			return cove.Errorf(cove.Invalid, "%q is neither a regular file nor a directory", name)
		}
	})
	if err != nil {
		return err
	}
	return writeFailed(tw.Close())
}

func writeTarFile(tw *tar.Writer, fsys fs.FS, name string) error {
	f, err := fsys.Open(name)
	if err != nil {
		return cove.Wrap(err, "opening a file to archive failed")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return cove.Wrap(err, "reading a file to archive failed")
	}
	if !fi.Mode().IsRegular() {
		return cove.Errorf(cove.Invalid, "%q is neither a regular file nor a directory", name)
	}
	err = tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     tarFileMode,
		Size:     fi.Size(),
		ModTime:  tarEpoch,
	})
	if err != nil {
		return writeFailed(err)
	}
	// CopyN and not Copy: a file growing meanwhile must not overflow the
	// size in its header, and one shrinking must fail rather than pad.
	if _, err := io.CopyN(tw, f, fi.Size()); err != nil {
		if errors.Is(err, io.EOF) {
			return cove.Errorf(cove.Conflict, "%q changed while it was archived", name)
		}
		return writeFailed(err)
	}
	return nil
}

// writeFailed keeps a *cove.Error of the caller's writer and makes any other
// error internal.
func writeFailed(err error) error {
	var ce *cove.Error
	if err == nil || errors.As(err, &ce) {
		return err
	}
	return cove.Wrap(err, "writing the archive failed")
}

// ExtractTar unpacks the tar archive r into dir, creating dir if needed. It
// is written for archives from untrusted hands: it accepts only regular
// files and directories with relative names that stay inside dir (no
// absolute names, no ".."), and rejects everything else (symbolic and hard
// links, devices, pipes, a name that appears twice) with Invalid. It creates
// files 0644 and directories 0755, whatever the archive says, and writes
// nothing outside dir even if dir already holds symbolic links.
//
// maxBytes bounds the content it writes plus 512 bytes per entry, so it
// bounds the number of entries too; an archive over it fails with TooLarge.
// The archive's own size is always a sufficient bound. maxBytes must be
// positive.
//
// ExtractTar reads r to its end, past the end of the archive, so that a
// Verify around r checks the whole blob and its mismatch is returned.
//
// On error dir holds part of the archive: extract into a fresh directory and
// remove it on error. Errors of r that are *cove.Error, such as a Verify
// mismatch, are returned unchanged.
func ExtractTar(r io.Reader, dir string, maxBytes int64) error {
	if maxBytes <= 0 {
		return cove.Errorf(cove.Invalid, "the extraction limit must be positive")
	}
	if err := os.MkdirAll(dir, tarDirMode); err != nil {
		return cove.Wrap(err, "creating the extraction directory failed")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return cove.Wrap(err, "opening the extraction directory failed")
	}
	defer root.Close()

	x := extractor{root: root, dirs: map[string]bool{}}
	tr := tar.NewReader(r)
	var used int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return drainArchive(r, maxBytes-used)
		}
		if err != nil {
			return readArchiveFailed(err)
		}
		used += tarBlock
		if hdr.Typeflag == tar.TypeReg {
			used += hdr.Size
		}
		if used > maxBytes {
			return cove.Errorf(cove.TooLarge, "the archive unpacks to more than %d bytes", maxBytes)
		}
		name, ok := localName(hdr.Name)
		if !ok {
			return cove.Errorf(cove.Invalid, "archive entry %q is not a relative path inside the directory", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = x.mkdirAll(name)
		case tar.TypeReg:
			err = x.file(name, tr)
		default:
			err = cove.Errorf(cove.Invalid, "archive entry %q is neither a regular file nor a directory", hdr.Name)
		}
		if err != nil {
			return err
		}
	}
}

// drainArchive reads what follows the end of the archive: padding to a
// record size (GNU tar pads to 10 KiB) or junk. Reading r to its end lets a
// Verify around it check the whole blob; the junk counts against the limit.
func drainArchive(r io.Reader, budget int64) error {
	n, err := io.Copy(io.Discard, io.LimitReader(r, budget+1))
	if err != nil {
		return readArchiveFailed(err)
	}
	if n > budget {
		return cove.Errorf(cove.TooLarge, "the archive is followed by too much data")
	}
	return nil
}

// localName returns name cleaned, and whether it is a path inside the
// extraction directory. Any ".." is refused, even one that cleaning would
// resolve inside: no tool that writes honest archives produces it.
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

// readArchiveFailed keeps a *cove.Error of the caller's reader and reports
// anything else as a malformed archive.
func readArchiveFailed(err error) error {
	var ce *cove.Error
	if errors.As(err, &ce) {
		return err
	}
	return &cove.Error{Code: cove.Invalid, Message: "the archive is malformed or cut off", Err: err}
}

type extractor struct {
	root *os.Root
	dirs map[string]bool // directories made or checked so far
}

// mkdirAll makes name and its parents with tarDirMode, set explicitly
// because the process umask must not decide what the sandbox can read.
func (x *extractor) mkdirAll(name string) error {
	if name == "." || x.dirs[name] {
		return nil
	}
	if err := x.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	err := x.root.Mkdir(name, tarDirMode)
	if errors.Is(err, fs.ErrExist) {
		fi, lerr := x.root.Lstat(name)
		if lerr != nil {
			return cove.Wrap(lerr, "creating a directory failed")
		}
		if !fi.IsDir() {
			return cove.Errorf(cove.Invalid, "archive entry %q is both a file and a directory", name)
		}
	} else if err != nil {
		return cove.Wrap(err, "creating a directory failed")
	}
	if err := x.root.Chmod(name, tarDirMode); err != nil {
		return cove.Wrap(err, "setting a directory's mode failed")
	}
	x.dirs[name] = true
	return nil
}

func (x *extractor) file(name string, content io.Reader) error {
	if name == "." {
		return cove.Errorf(cove.Invalid, "an archive entry names the directory itself as a file")
	}
	if err := x.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	// O_EXCL: an entry may not replace one before it, nor anything that
	// was in dir before.
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, tarFileMode)
	if errors.Is(err, fs.ErrExist) {
		return cove.Errorf(cove.Invalid, "archive entry %q appears twice", name)
	} else if err != nil {
		return cove.Wrap(err, "creating a file failed")
	}
	if err := f.Chmod(tarFileMode); err != nil {
		f.Close()
		return cove.Wrap(err, "setting a file's mode failed")
	}
	src := &recordingReader{r: content}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		if src.err != nil {
			return readArchiveFailed(src.err)
		}
		return cove.Wrap(err, "writing a file failed")
	}
	if err := f.Close(); err != nil {
		return cove.Wrap(err, "writing a file failed")
	}
	return nil
}

// recordingReader remembers the error of r, so that a failed copy can be
// blamed on the archive or on the disk.
type recordingReader struct {
	r   io.Reader
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && err != io.EOF {
		rr.err = err
	}
	return n, err
}
