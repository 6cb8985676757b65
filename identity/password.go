package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the argon2id cost parameters. The defaults are OWASP's
// minimum recommendation for argon2id (19 MiB, 2 passes, 1 lane), which
// costs about 30 ms on one core; docs/configuration.md explains how to
// raise them. Hashes record their own parameters, so raising them later
// keeps old passwords valid and rehashes them at the next login.
type Argon2Params struct {
	MemoryKiB uint32 `koanf:"memory_kib" doc:"argon2id memory per hash, KiB"`
	Time      uint32 `koanf:"time" doc:"argon2id passes"`
	Threads   uint8  `koanf:"threads" doc:"argon2id lanes"`
}

// DefaultArgon2 is used when no parameters are configured.
var DefaultArgon2 = Argon2Params{MemoryKiB: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
)

// HashPassword returns the PHC string of pw, such as
// "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>".
func HashPassword(pw string, p Argon2Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches the PHC string hash, and whether
// hash was made with parameters other than want (so it should be redone).
func CheckPassword(pw, hash string, want Argon2Params) (ok, stale bool) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, false
	}
	var v int
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false, false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil || p.Time == 0 || p.Threads == 0 {
		return false, false
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	key, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(key) == 0 {
		return false, false
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, p != want
}

// dummyHash is checked against when a login names an unknown email, so that
// the response time does not tell which emails have accounts.
var dummyHash, _ = HashPassword("cove-timing-equalizer", DefaultArgon2)
