package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/covecompute/cove"
)

// Files in the key directory.
const (
	rootCertFile         = "root.pem"
	rootKeyFile          = "root.key"
	intermediateCertFile = "intermediate.pem"
	intermediateKeyFile  = "intermediate.key"
)

// ageHeader starts every age file; a key file that starts with it is
// encrypted.
var ageHeader = []byte("age-encryption.org/v1\n")

// hierarchy is the root and the intermediate that signs everything else.
// The root's key stays on disk: nothing at run time needs it.
type hierarchy struct {
	root, intermediate *x509.Certificate
	key                crypto.Signer // the intermediate's
}

// keyFiles reads and writes key files, encrypted when a passphrase is set.
type keyFiles struct {
	dir        string
	passphrase string
	workFactor int // scrypt log2(N); 0 means age's default
}

// openHierarchy loads the root and intermediate from dir, creating them at
// the first start. Two replicas starting at once on a shared directory
// both build a hierarchy in a directory of their own and rename it into
// place; the loser loads the winner's.
func openHierarchy(kf keyFiles, now time.Time) (*hierarchy, error) {
	if _, err := os.Stat(filepath.Join(kf.dir, intermediateCertFile)); errors.Is(err, fs.ErrNotExist) {
		if err := kf.create(now); err != nil {
			return nil, err
		}
	}
	return kf.load()
}

func (kf keyFiles) create(t time.Time) error {
	parent := filepath.Dir(kf.dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return cove.Wrap(err, "could not create "+parent)
	}
	tmp, err := os.MkdirTemp(parent, ".ca-*")
	if err != nil {
		return cove.Wrap(err, "could not create a directory for the CA keys in "+parent)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o700); err != nil {
		return cove.Wrap(err, "could not protect "+tmp)
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cove.Wrap(err, "could not generate the root key")
	}
	tag := make([]byte, 4)
	_, _ = rand.Read(tag)
	rootTmpl := &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"Cove"}, CommonName: "Cove Root CA " + hex.EncodeToString(tag)},
		NotBefore: t.Add(-clockSkew), NotAfter: t.Add(rootTTL),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, root, err := sign(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return err
	}
	intKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cove.Wrap(err, "could not generate the intermediate key")
	}
	intTmpl := &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"Cove"}, CommonName: "Cove Intermediate CA " + hex.EncodeToString(tag)},
		NotBefore: t.Add(-clockSkew), NotAfter: t.Add(intermediateTTL),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	intDER, _, err := sign(intTmpl, root, intKey.Public(), rootKey)
	if err != nil {
		return err
	}
	out := keyFiles{dir: tmp, passphrase: kf.passphrase, workFactor: kf.workFactor}
	for _, f := range []struct {
		name string
		data []byte
		key  bool
	}{
		{rootCertFile, pemCert(rootDER), false},
		{intermediateCertFile, pemCert(intDER), false},
	} {
		if err := writeFile(filepath.Join(tmp, f.name), f.data); err != nil {
			return err
		}
	}
	if err := out.writeKey(rootKeyFile, rootKey); err != nil {
		return err
	}
	if err := out.writeKey(intermediateKeyFile, intKey); err != nil {
		return err
	}
	if err := os.Rename(tmp, kf.dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(kf.dir, intermediateCertFile)); statErr == nil {
			return nil // another replica won
		}
		return cove.Wrap(err, "could not move the CA keys into "+kf.dir)
	}
	return nil
}

func (kf keyFiles) load() (*hierarchy, error) {
	var h hierarchy
	var err error
	if h.root, err = readCert(filepath.Join(kf.dir, rootCertFile)); err != nil {
		return nil, err
	}
	if h.intermediate, err = readCert(filepath.Join(kf.dir, intermediateCertFile)); err != nil {
		return nil, err
	}
	if err := h.intermediate.CheckSignatureFrom(h.root); err != nil {
		return nil, cove.Errorf(cove.Invalid, "the CA intermediate in %s was not signed by the root next to it; restore both from the same backup", kf.dir)
	}
	if h.key, err = kf.readKey(intermediateKeyFile); err != nil {
		return nil, err
	}
	if !publicKeysEqual(h.key.Public(), h.intermediate.PublicKey) {
		return nil, cove.Errorf(cove.Invalid, "%s does not hold the key of %s; restore both from the same backup", filepath.Join(kf.dir, intermediateKeyFile), intermediateCertFile)
	}
	// A passphrase set after the keys were written without one encrypts
	// them now, so that setting it is all an operator has to do.
	if kf.passphrase != "" {
		for _, name := range []string{rootKeyFile, intermediateKeyFile} {
			if err := kf.encryptInPlace(name); err != nil {
				return nil, err
			}
		}
	}
	return &h, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// writeKey writes a PKCS#8 key, encrypted to the passphrase when set.
func (kf keyFiles) writeKey(name string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return cove.Wrap(err, "could not encode a CA key")
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if kf.passphrase != "" {
		if data, err = kf.encrypt(data); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(kf.dir, name), data)
}

func (kf keyFiles) encrypt(plain []byte) ([]byte, error) {
	r, err := age.NewScryptRecipient(kf.passphrase)
	if err != nil {
		return nil, cove.Wrap(err, "could not use ca.passphrase")
	}
	if kf.workFactor > 0 {
		r.SetWorkFactor(kf.workFactor)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, cove.Wrap(err, "could not encrypt a CA key")
	}
	if _, err := w.Write(plain); err != nil {
		return nil, cove.Wrap(err, "could not encrypt a CA key")
	}
	if err := w.Close(); err != nil {
		return nil, cove.Wrap(err, "could not encrypt a CA key")
	}
	return buf.Bytes(), nil
}

func (kf keyFiles) readKey(name string) (crypto.Signer, error) {
	path := filepath.Join(kf.dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, cove.Errorf(cove.Invalid, "could not read the CA key %s: %v", path, err)
	}
	if bytes.HasPrefix(data, ageHeader) {
		if kf.passphrase == "" {
			return nil, cove.Errorf(cove.Invalid, "the CA key %s is encrypted; set ca.passphrase (COVE_CA_PASSPHRASE) to the passphrase it was written with", path)
		}
		id, err := age.NewScryptIdentity(kf.passphrase)
		if err != nil {
			return nil, cove.Wrap(err, "could not use ca.passphrase")
		}
		r, err := age.Decrypt(bytes.NewReader(data), id)
		if err != nil {
			return nil, &cove.Error{Code: cove.Invalid, Message: "ca.passphrase does not decrypt the CA key " + path + "; the passphrase is wrong (or the file is damaged)", Err: err}
		}
		if data, err = io.ReadAll(r); err != nil {
			return nil, &cove.Error{Code: cove.Invalid, Message: "the CA key " + path + " is damaged", Err: err}
		}
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, cove.Errorf(cove.Invalid, "the CA key %s is not a PEM PRIVATE KEY", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: "the CA key " + path + " is damaged", Err: err}
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, cove.Errorf(cove.Invalid, "the CA key %s cannot sign", path)
	}
	return signer, nil
}

// encryptInPlace encrypts a plain key file to the passphrase, through a
// temporary file and a rename so that a crash leaves one or the other.
func (kf keyFiles) encryptInPlace(name string) error {
	path := filepath.Join(kf.dir, name)
	data, err := os.ReadFile(path)
	if err != nil || bytes.HasPrefix(data, ageHeader) {
		return nil // a missing root key is allowed: it may be kept offline
	}
	enc, err := kf.encrypt(data)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp) // left by a crash halfway through
	if err := writeFile(tmp, enc); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return cove.Wrap(err, "could not encrypt "+path)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, cove.Errorf(cove.Invalid, "could not read the CA certificate %s: %v", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, cove.Errorf(cove.Invalid, "%s is not a PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: path + " is not a valid certificate", Err: err}
	}
	return c, nil
}

// writeFile creates a file only its owner can read; it must not exist.
func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return cove.Wrap(err, "could not write "+path)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return cove.Wrap(err, "could not write "+path)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return cove.Wrap(err, "could not write "+path)
	}
	return f.Close()
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, cove.Wrap(err, "could not make a serial number")
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// sign creates a certificate from tmpl, with a new serial, signed by
// parent's key.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, nil, cove.Wrap(err, "could not sign a certificate")
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, cove.Wrap(err, "could not read back a signed certificate")
	}
	return der, c, nil
}
