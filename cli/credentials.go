package cli

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/identity"
)

// credentialsFile is the name of the saved login in the config directory.
const credentialsFile = "credentials.json"

// credentials is the saved login: which server, as whom, and the session's
// tokens. The file is readable by its owner only.
type credentials struct {
	Server       string    `json:"server"`
	Email        string    `json:"email"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	ExpiresAt    time.Time `json:"expires_at"` // of the access token
	// CA (PEM) and CAFingerprint are how the server's certificate was
	// trusted at login; later commands to the same server trust it so too.
	CA            string `json:"ca,omitempty"`
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
}

// update takes renewed tokens.
func (c *credentials) update(t *identity.Tokens) {
	c.AccessToken, c.RefreshToken, c.ExpiresAt = t.AccessToken, t.RefreshToken, t.ExpiresAt
	if t.User != nil {
		c.Email = t.User.Email
	}
}

func (a *app) credentialsPath() (string, error) {
	dir, err := a.dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, credentialsFile), nil
}

// loadCredentials returns the saved login, or nil when there is none.
func (a *app) loadCredentials() (*credentials, error) {
	path, err := a.credentialsPath()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, cove.Errorf(cove.Internal, "could not read the saved login %s: %v", path, err)
	}
	var c credentials
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, cove.Errorf(cove.Invalid, "the saved login %s is damaged; run `cove login` again or delete the file", path)
	}
	return &c, nil
}

// saveCredentials writes c atomically with mode 0600, creating the
// directory with mode 0700.
func (a *app) saveCredentials(c *credentials) error {
	path, err := a.credentialsPath()
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return cove.Wrap(err, "could not encode the credentials")
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return cove.Errorf(cove.Internal, "could not create %s: %v", dir, err)
	}
	// A temporary file renamed over the old one: a crash never leaves half
	// a file, and CreateTemp makes it 0600 before any secret is written.
	f, err := os.CreateTemp(dir, ".credentials-*.json")
	if err != nil {
		return cove.Errorf(cove.Internal, "could not save the login in %s: %v", dir, err)
	}
	defer os.Remove(f.Name()) // a no-op after the rename
	werr := f.Chmod(0o600)
	if werr == nil {
		_, werr = f.Write(data)
	}
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return cove.Errorf(cove.Internal, "could not save the login in %s: %v", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return cove.Errorf(cove.Internal, "could not save the login in %s: %v", path, err)
	}
	return nil
}

// removeCredentials deletes the saved login; none is no error.
func (a *app) removeCredentials() error {
	path, err := a.credentialsPath()
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return cove.Errorf(cove.Internal, "could not delete the saved login %s: %v", path, err)
	}
	return nil
}
