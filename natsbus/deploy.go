package natsbus

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
)

// Files InitExternal writes into its directory. The first three belong on
// the hosts that run `cove serve`, the configuration and the operator JWT
// on the NATS hosts.
const (
	DeployOperatorSeed = "operator.nk"      // signs the COVE account; cove serve only
	DeploySystemCreds  = "system.creds"     // a user of the system account, for pushing the account
	DeployAccountSeed  = "account.nk"       // signs node, agent and control plane users
	DeployOperatorJWT  = "operator.jwt"     // the operator the server trusts
	DeployServerConfig = "nats-server.conf" // nats-server -c
	deployResolverDir  = "jwt"              // the full resolver's account store, made by the server
	deployStoreDir     = "jetstream"        // the server adds another "jetstream" below it
)

// DefaultDeployListen is where the nats-server of InitExternal listens by
// default: NATS's usual port, on loopback until the operator widens it.
const DefaultDeployListen = "127.0.0.1:4222"

// Deployment is an external NATS deployment prepared by InitExternal: a
// nats-server configuration in operator mode with a full account resolver,
// and the keys `cove serve` manages the COVE account with.
type Deployment struct {
	// Dir holds every file, by absolute path.
	Dir string
	// ServerConfig is the nats-server configuration file.
	ServerConfig string
	// URL is the client URL of the server the configuration describes.
	URL string
	// OperatorSeedFile, SystemCredsFile and AccountSeedFile are the control
	// plane's keys.
	OperatorSeedFile string
	SystemCredsFile  string
	AccountSeedFile  string
}

// Config returns the Config of a control plane that manages the
// deployment's COVE account.
func (d Deployment) Config() Config {
	return Config{URL: d.URL, OperatorSeedFile: d.OperatorSeedFile, SystemCredsFile: d.SystemCredsFile, AccountSeedFile: d.AccountSeedFile}
}

// InitExternal prepares a new external NATS deployment in dir, which must
// not hold one yet: a new operator, its system account with one user, the
// COVE account's key, and a nats-server configuration listening on listen
// (host:port) that trusts the operator, resolves accounts with a full
// resolver in dir/jwt and keeps JetStream in dir/jetstream. Every file is
// 0600 in a 0700 directory. The COVE account itself is not written: the
// control plane signs it and pushes it at every start.
//
// Errors: Invalid for a bad listen address, Conflict when dir already holds
// a deployment file, Internal when a file cannot be written.
func InitExternal(dir, listen string) (Deployment, error) {
	host, port, err := net.SplitHostPort(listen)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 {
		return Deployment{}, cove.Errorf(cove.Invalid, "listen address %q is not host:port", listen)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return Deployment{}, cove.Errorf(cove.Invalid, "bad directory %q: %v", dir, err)
	}
	d := Deployment{
		Dir:              dir,
		ServerConfig:     filepath.Join(dir, DeployServerConfig),
		URL:              "nats://" + clientHost(host, port),
		OperatorSeedFile: filepath.Join(dir, DeployOperatorSeed),
		SystemCredsFile:  filepath.Join(dir, DeploySystemCreds),
		AccountSeedFile:  filepath.Join(dir, DeployAccountSeed),
	}
	// Overwriting an operator would strand every account and credential
	// issued under it.
	for _, name := range []string{DeployOperatorSeed, DeploySystemCreds, DeployAccountSeed, DeployOperatorJWT, DeployServerConfig, deployResolverDir} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			return Deployment{}, cove.Errorf(cove.Conflict, "%s already exists; choose an empty directory, an existing deployment is never overwritten", filepath.Join(dir, name))
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Deployment{}, cove.Wrap(err, "cannot create the deployment directory")
	}

	operator, err := nkeys.CreateOperator()
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot create the operator key")
	}
	defer operator.Wipe()
	system, err := nkeys.CreateAccount()
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot create the system account key")
	}
	defer system.Wipe()
	sysUser, err := nkeys.CreateUser()
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot create the system user key")
	}
	defer sysUser.Wipe()
	account, err := nkeys.CreateAccount()
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot create the COVE account key")
	}
	defer account.Wipe()
	opPub, _ := operator.PublicKey()
	sysPub, _ := system.PublicKey()
	userPub, _ := sysUser.PublicKey()

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "cove"
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(operator)
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot sign the operator")
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(operator)
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot sign the system account")
	}
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "cove account pusher"
	userJWT, err := uc.Encode(system)
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot sign the system user")
	}
	userSeed, _ := sysUser.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, userSeed)
	if err != nil {
		return Deployment{}, cove.Wrap(err, "cannot format the system user's credentials")
	}
	opSeed, _ := operator.Seed()
	accSeed, _ := account.Seed()

	// The resolver never deletes an account (allow_delete: false), so a
	// stolen system user cannot remove the COVE account and its
	// revocations with it; the preload lets the system account connect
	// before anything was pushed.
	conf := fmt.Sprintf(`# nats-server configuration written by cove nats init.
# Start with: nats-server -c %[1]s
listen: %[2]q

operator: %[3]q
system_account: %[4]s

resolver {
  type: full
  dir: %[5]q
  allow_delete: false
  interval: "2m"
}
resolver_preload {
  %[4]s: %[6]q
}

jetstream {
  store_dir: %[7]q
}
`, d.ServerConfig, net.JoinHostPort(host, port), filepath.Join(dir, DeployOperatorJWT), sysPub,
		filepath.Join(dir, deployResolverDir), sysJWT, filepath.Join(dir, deployStoreDir))

	files := []struct {
		name string
		data []byte
	}{
		{DeployOperatorSeed, fmt.Appendf(nil, "%s\n", opSeed)},
		{DeployAccountSeed, fmt.Appendf(nil, "%s\n", accSeed)},
		{DeploySystemCreds, creds},
		{DeployOperatorJWT, []byte(opJWT + "\n")},
		{DeployServerConfig, []byte(conf)},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data); err != nil {
			return Deployment{}, cove.Wrap(err, "cannot write "+f.name)
		}
	}
	return d, nil
}

// clientHost is what a client on the same machine dials for a listener on
// host: a wildcard address is reachable on loopback.
func clientHost(host, port string) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
