package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/identity"
)

// DevAdminEmail is the account --dev seeds.
const DevAdminEmail = "admin@cove.local"

const devPasswordFile = "dev-admin-password"

// seed creates, once, the dev admin with a random password kept in the data
// dir, and a demo workspace it owns. Later starts reuse both.
func (m *Main) seed(ctx context.Context) error {
	path := filepath.Join(m.Config.DataDir, devPasswordFile)
	if b, err := os.ReadFile(path); err == nil {
		m.DevPassword = strings.TrimSpace(string(b))
		return nil
	}
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return cove.Wrap(err, "could not make a password")
	}
	m.DevPassword = base64.RawURLEncoding.EncodeToString(b)
	u, err := m.Identity.Signup(ctx, cove.Principal{Admin: true}, identity.SignupInput{Email: DevAdminEmail, Name: "Dev Admin", Password: m.DevPassword})
	if err != nil {
		return err
	}
	p := cove.Principal{UserID: u.ID, Email: u.Email, Admin: u.Admin}
	if _, err := m.Workspace.Create(ctx, p, "demo"); err != nil {
		return err
	}
	return writeSecret(path, m.DevPassword+"\n")
}
