//go:build unix

package computenode

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/covecompute/cove"
)

// lockDataDir takes an exclusive lock on the data directory, so that a
// second node on the same directory fails at start instead of wiping the
// first one's work directories. The lock goes with the process.
func lockDataDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "node.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, cove.Wrap(err, "cannot lock the data directory")
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, cove.Errorf(cove.Conflict, "another node is running with the data directory %s", dir)
		}
		return nil, cove.Wrap(err, "cannot lock the data directory")
	}
	return func() { f.Close() }, nil
}
