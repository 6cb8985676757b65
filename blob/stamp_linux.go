package blob

import (
	"os"
	"syscall"
)

// stampOf is what changes when a file is written, truncated or replaced:
// size, modification time, inode. Not the change time, which hard links
// to the entry (Cache.Link) move too.
func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s
}
