//go:build !linux

package blob

import "os"

// stampOf is what changes when a file is written: its size and
// modification time (elsewhere than Linux, without the change time).
func stampOf(fi os.FileInfo) fileStamp {
	return fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}
