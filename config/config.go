// Package config is the one typed configuration tree of `cove serve`.
//
// Values come, lowest first, from the defaults here, an optional YAML file
// (--config), environment variables named COVE_ plus the key in upper case
// with dots as underscores (database.url is COVE_DATABASE_URL), and flags.
// docs/configuration.md lists every key; a test keeps the two in step.
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/ca"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/runproto"
)

// Config is the whole configuration. Fields tagged secret:"true" are masked
// when printed.
type Config struct {
	DataDir  string   `koanf:"data_dir" doc:"directory for the SQLite database, JetStream, blobs and keys"`
	Dev      bool     `koanf:"dev" doc:"seed an admin account and a demo workspace, and print how to log in"`
	HTTP     HTTP     `koanf:"http"`
	Database Database `koanf:"database"`
	NATS     NATS     `koanf:"nats"`
	Auth     Auth     `koanf:"auth"`
	Node     Node     `koanf:"node"`
	Run      Run      `koanf:"run"`
	CA       CA       `koanf:"ca"`
	Log      Log      `koanf:"log"`
}

// Node configures the node registry.
type Node struct {
	LostAfter         time.Duration `koanf:"lost_after" doc:"a node silent this long is lost and its runs fail with node_lost"`
	HeartbeatInterval time.Duration `koanf:"heartbeat_interval" doc:"how often nodes heartbeat; told to each node at enrollment"`
}

// CA configures the certificate authority.
type CA struct {
	NodeCertTTL   time.Duration `koanf:"node_cert_ttl" doc:"lifetime of node certificates"`
	UserCertTTL   time.Duration `koanf:"user_cert_ttl" doc:"longest lifetime of user certificates (the default when none is asked)"`
	ServerCertTTL time.Duration `koanf:"server_cert_ttl" doc:"longest lifetime of server certificates"`
	AgentCertTTL  time.Duration `koanf:"agent_cert_ttl" doc:"longest lifetime of agent certificates"`
	Passphrase    string        `koanf:"passphrase" secret:"true" doc:"encrypts the CA keys in <data_dir>/ca (age, scrypt); empty leaves them plain, mode 0600; set after the fact, it encrypts them at the next start"`
	ResponderTTL  time.Duration `koanf:"ocsp_responder_ttl" doc:"lifetime of the delegated OCSP responder certificate, renewed at half of it"`
	OCSPTTL       time.Duration `koanf:"ocsp_ttl" doc:"how long an OCSP answer is valid (its nextUpdate)"`
	CRLTTL        time.Duration `koanf:"crl_ttl" doc:"how long a CRL is valid (its nextUpdate); re-issued at half of it and on every revocation"`
}

// Run configures runs.
type Run struct {
	QueueTimeout time.Duration `koanf:"queue_timeout" doc:"a run waiting this long for capacity fails with no_capacity"`
}

// HTTP configures the API and UI listener.
type HTTP struct {
	Addr         string `koanf:"addr" doc:"host:port to listen on; port 0 picks a free one"`
	PublicURL    string `koanf:"public_url" doc:"URL users reach the server at, when it differs from the listener (behind a proxy)"`
	MaxBodyBytes int64  `koanf:"max_body_bytes" doc:"largest JSON request body"`
	TLS          TLS    `koanf:"tls"`
}

// TLS modes of the listener.
const (
	TLSAuto = "auto" // a server certificate from Cove's own CA, renewed by itself
	TLSFile = "file" // the certificate and key in tls.cert_file and tls.key_file
	TLSOff  = "off"  // plain HTTP: nodes cannot use mTLS; only behind a TLS proxy or in tests
)

// TLS configures HTTPS on the listener.
type TLS struct {
	Mode     string `koanf:"mode" doc:"auto (a certificate from Cove's CA), file (cert_file and key_file) or off (plain HTTP; nodes cannot use mTLS)"`
	CertFile string `koanf:"cert_file" doc:"PEM certificate chain of the listener, with mode file"`
	KeyFile  string `koanf:"key_file" doc:"PEM private key of the listener, with mode file"`
	Hosts    string `koanf:"hosts" doc:"comma-separated extra DNS names and IPs of the auto certificate; localhost, loopback, the host name and the public URL's host are always in it"`
}

// Database selects the SQL store.
type Database struct {
	URL string `koanf:"url" secret:"true" doc:"postgres:// URL; empty means SQLite at <data_dir>/cove.db"`
}

// NATS selects the message bus: embedded (no url), external managed by
// Cove (url and operator_seed_file) or external managed elsewhere (url
// only); docs/external-nats.md describes the external kinds.
type NATS struct {
	URL       string `koanf:"url" doc:"external NATS URL(s), comma separated; empty runs an embedded server"`
	CredsFile string `koanf:"creds_file" doc:"external NATS: the control plane's user credentials; empty connects without (unmanaged) or as a user Cove signs itself (managed)"`
	// AccountSeedFile signs node and agent credentials on an external NATS.
	AccountSeedFile string `koanf:"account_seed_file" doc:"external NATS: seed of the account node and agent users belong to"`
	// OperatorSeedFile and SystemCredsFile make Cove manage the account.
	OperatorSeedFile string `koanf:"operator_seed_file" doc:"external NATS managed by Cove: seed of the operator the server trusts; Cove signs and pushes its account with it (cove nats init)"`
	SystemCredsFile  string `koanf:"system_creds_file" doc:"external NATS managed by Cove: credentials of a system account user, to push the account"`
	AdvertiseURL     string `koanf:"advertise_url" doc:"NATS URL nodes and agents dial, when it differs from nats.url or the embedded listener"`
	StreamReplicas   int    `koanf:"stream_replicas" doc:"JetStream replicas of Cove's streams: 1, or 3 on a NATS cluster"`
	Host             string `koanf:"host" doc:"embedded server: address nodes and agents connect to"`
	Port             int    `koanf:"port" doc:"embedded server: port nodes and agents connect to; -1 picks a free one"`
}

// Auth configures identity.
type Auth struct {
	OpenSignup          bool                  `koanf:"open_signup" doc:"anyone may sign up; when false only the first user and admins create accounts"`
	AccessTTL           time.Duration         `koanf:"access_ttl" doc:"lifetime of an access token"`
	RefreshTTL          time.Duration         `koanf:"refresh_ttl" doc:"idle lifetime of a login session"`
	MaxTokenTTL         time.Duration         `koanf:"max_token_ttl" doc:"longest lifetime of a personal access token"`
	TokenSecret         string                `koanf:"token_secret" secret:"true" doc:"HMAC key of access tokens (32+ bytes); empty means generated in <data_dir>/secrets; set the same value on every replica"`
	Argon2              identity.Argon2Params `koanf:"argon2"`
	LoginBurstPerEmail  int                   `koanf:"login_burst_per_email" doc:"login attempts allowed at once per email"`
	LoginBurstPerClient int                   `koanf:"login_burst_per_client" doc:"login attempts allowed at once per client address"`
	LoginRefill         time.Duration         `koanf:"login_refill" doc:"one more login attempt per email or client after each period"`
}

// Log configures logging.
type Log struct {
	Level  string `koanf:"level" doc:"debug, info, warn or error"`
	Format string `koanf:"format" doc:"text or json"`
}

// Default returns the defaults.
func Default() Config {
	return Config{
		DataDir: "./cove-data",
		HTTP:    HTTP{Addr: "127.0.0.1:7100", MaxBodyBytes: 1 << 20, TLS: TLS{Mode: TLSAuto}},
		NATS:    NATS{Host: "127.0.0.1", Port: 7422, StreamReplicas: 1},
		Auth: Auth{
			OpenSignup: true, AccessTTL: 15 * time.Minute, RefreshTTL: 30 * 24 * time.Hour, MaxTokenTTL: 365 * 24 * time.Hour,
			Argon2: identity.DefaultArgon2, LoginBurstPerEmail: 10, LoginBurstPerClient: 30, LoginRefill: 6 * time.Second,
		},
		Node: Node{LostAfter: 15 * time.Second, HeartbeatInterval: runproto.NodeHeartbeatInterval},
		CA: CA{
			NodeCertTTL: ca.DefaultNodeTTL, UserCertTTL: ca.DefaultUserTTL, ServerCertTTL: ca.DefaultServerTTL, AgentCertTTL: ca.DefaultAgentTTL,
			ResponderTTL: ca.DefaultResponderTTL, OCSPTTL: ca.DefaultOCSPTTL, CRLTTL: ca.DefaultCRLTTL,
		},
		Run: Run{QueueTimeout: 5 * time.Minute},
		Log: Log{Level: "info", Format: "text"},
	}
}

// flags maps each flag of `cove serve` to its key. Every key can also be set
// by file and environment; these are the ones worth a flag.
var flags = []struct{ name, key, usage string }{
	{"data-dir", "data_dir", ""},
	{"dev", "dev", ""},
	{"http-addr", "http.addr", ""},
	{"public-url", "http.public_url", ""},
	{"database-url", "database.url", ""},
	{"nats-url", "nats.url", ""},
	{"nats-creds", "nats.creds_file", ""},
	{"nats-account-seed", "nats.account_seed_file", ""},
	{"nats-operator-seed", "nats.operator_seed_file", ""},
	{"nats-system-creds", "nats.system_creds_file", ""},
	{"nats-port", "nats.port", ""},
	{"log-level", "log.level", ""},
	{"log-format", "log.format", ""},
}

// AddFlags registers the serve flags, with the defaults as their defaults.
func AddFlags(fs *pflag.FlagSet) {
	d := Default()
	keys := keyDocs()
	fs.String("config", "", "YAML configuration file")
	for _, f := range flags {
		usage := keys[f.key].doc
		switch v := keys[f.key].def(d).(type) {
		case string:
			fs.String(f.name, v, usage)
		case bool:
			fs.Bool(f.name, v, usage)
		case int:
			fs.Int(f.name, v, usage)
		}
	}
}

// Load builds the configuration from defaults, the file named by the
// --config flag, the environment and the flags, then validates it. environ
// is the environment as os.Environ returns it.
func Load(fs *pflag.FlagSet, environ []string) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(structs.Provider(Default(), "koanf"), nil); err != nil {
		return Config{}, cove.Wrap(err, "could not load defaults")
	}
	if fs != nil {
		if path, _ := fs.GetString("config"); path != "" {
			if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
				return Config{}, cove.Errorf(cove.Invalid, "could not read the configuration file %s: %v", path, err)
			}
		}
	}
	known := keyDocs()
	byEnv := map[string]string{}
	for key := range known {
		byEnv[EnvName(key)] = key
	}
	err := k.Load(env.Provider(".", env.Opt{
		Prefix:        "COVE_",
		EnvironFunc:   func() []string { return environ },
		TransformFunc: func(name, v string) (string, any) { return byEnv[name], v },
	}), nil)
	if err != nil {
		return Config{}, cove.Wrap(err, "could not read the environment")
	}
	if fs != nil {
		byFlag := map[string]string{}
		for _, f := range flags {
			byFlag[f.name] = f.key
		}
		err := k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
			key := byFlag[f.Name]
			if key == "" {
				return "", nil
			}
			return key, posflag.FlagVal(fs, f)
		}), nil)
		if err != nil {
			return Config{}, cove.Wrap(err, "could not read the flags")
		}
	}
	for _, key := range k.Keys() {
		if _, ok := known[key]; !ok {
			return Config{}, cove.Errorf(cove.Invalid, "unknown configuration key %q; see docs/configuration.md", key)
		}
	}
	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return Config{}, cove.Errorf(cove.Invalid, "bad configuration value: %v", err)
	}
	return c, c.Validate()
}

// Validate checks every value.
func (c Config) Validate() error {
	var ds []cove.Detail
	bad := func(key, msg string) { ds = append(ds, cove.Detail{Field: key, Message: msg}) }
	if c.DataDir == "" {
		bad("data_dir", "required")
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		bad("http.addr", "not host:port")
	}
	if c.HTTP.PublicURL != "" {
		if u, err := url.Parse(c.HTTP.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("http.public_url", "not an http(s) URL")
		}
	}
	switch c.HTTP.TLS.Mode {
	case TLSAuto, TLSOff:
	case TLSFile:
		if c.HTTP.TLS.CertFile == "" || c.HTTP.TLS.KeyFile == "" {
			bad("http.tls.cert_file", "required with http.tls.mode file, as is http.tls.key_file")
		}
	default:
		bad("http.tls.mode", "one of auto, file, off")
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		bad("http.max_body_bytes", "below 1024")
	}
	if u := c.Database.URL; u != "" && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		bad("database.url", "not a postgres:// URL (leave it empty for SQLite)")
	}
	if c.NATS.URL == "" && (c.NATS.Port < -1 || c.NATS.Port > 65535 || c.NATS.Port == 0) {
		bad("nats.port", "not a port (use -1 for a free one)")
	}
	if c.NATS.Port == 4222 && c.NATS.URL == "" {
		bad("nats.port", "4222 is the usual port of a standalone NATS; the embedded one defaults to 7422 to stay clear of it")
	}
	c.validateNATS(bad)
	for key, d := range map[string]time.Duration{"node.lost_after": c.Node.LostAfter, "run.queue_timeout": c.Run.QueueTimeout, "auth.access_ttl": c.Auth.AccessTTL, "auth.refresh_ttl": c.Auth.RefreshTTL, "auth.max_token_ttl": c.Auth.MaxTokenTTL, "auth.login_refill": c.Auth.LoginRefill} {
		if d <= 0 {
			bad(key, "must be positive")
		}
	}
	for key, d := range map[string]time.Duration{"ca.node_cert_ttl": c.CA.NodeCertTTL, "ca.user_cert_ttl": c.CA.UserCertTTL, "ca.server_cert_ttl": c.CA.ServerCertTTL, "ca.agent_cert_ttl": c.CA.AgentCertTTL,
		"ca.ocsp_responder_ttl": c.CA.ResponderTTL, "ca.ocsp_ttl": c.CA.OCSPTTL, "ca.crl_ttl": c.CA.CRLTTL} {
		if d < ca.MinTTL {
			bad(key, "must be at least "+ca.MinTTL.String())
		}
	}
	if hb := c.Node.HeartbeatInterval; hb < 100*time.Millisecond || hb > time.Minute {
		bad("node.heartbeat_interval", "from 100ms to 1m")
	} else if c.Node.LostAfter > 0 && c.Node.LostAfter < 2*hb {
		bad("node.lost_after", "must be at least twice node.heartbeat_interval ("+(2*hb).String()+"), or healthy nodes are declared lost")
	}
	if c.Auth.TokenSecret != "" && len(c.Auth.TokenSecret) < 32 {
		bad("auth.token_secret", "shorter than 32 bytes")
	}
	if a := c.Auth.Argon2; a.MemoryKiB < 8 || a.Time < 1 || a.Threads < 1 {
		bad("auth.argon2", "memory_kib >= 8, time >= 1 and threads >= 1")
	}
	if c.Auth.LoginBurstPerEmail < 1 || c.Auth.LoginBurstPerClient < 1 {
		bad("auth.login_burst_per_email", "must be at least 1")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "one of debug, info, warn, error")
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "text or json")
	}
	if len(ds) > 0 {
		sort.Slice(ds, func(i, j int) bool { return ds[i].Field < ds[j].Field })
		return cove.Errorf(cove.Invalid, "the configuration is not valid: %s %s", ds[0].Field, ds[0].Message).WithDetails(ds...)
	}
	return nil
}

// validateNATS checks that the NATS keys make one of the three deployments
// of natsbus.Config.
func (c Config) validateNATS(bad func(key, msg string)) {
	n := c.NATS
	if n.StreamReplicas < 1 || n.StreamReplicas > 5 {
		bad("nats.stream_replicas", "between 1 and 5 (JetStream's limit); 3 on a cluster")
	}
	if n.AdvertiseURL != "" && !natsURL(n.AdvertiseURL) {
		bad("nats.advertise_url", "not a NATS URL such as nats://host:4222")
	}
	if n.URL == "" {
		for key, v := range map[string]string{"nats.creds_file": n.CredsFile, "nats.account_seed_file": n.AccountSeedFile, "nats.operator_seed_file": n.OperatorSeedFile, "nats.system_creds_file": n.SystemCredsFile} {
			if v != "" {
				bad(key, "applies only to an external NATS: set nats.url too, or leave it empty for the embedded server")
			}
		}
		return
	}
	if slices.ContainsFunc(strings.Split(n.URL, ","), func(u string) bool { return !natsURL(strings.TrimSpace(u)) }) {
		bad("nats.url", "not a NATS URL such as nats://host:4222")
	}
	if n.OperatorSeedFile != "" {
		if n.SystemCredsFile == "" {
			bad("nats.system_creds_file", "required with nats.operator_seed_file: a system account user pushes the account (cove nats init writes system.creds)")
		}
		if n.AccountSeedFile == "" {
			bad("nats.account_seed_file", "required with nats.operator_seed_file: the account Cove manages (cove nats init writes account.nk)")
		}
	} else if n.SystemCredsFile != "" {
		bad("nats.system_creds_file", "used only with nats.operator_seed_file, to push the account Cove manages")
	}
}

// natsURL reports whether s looks like a URL a NATS client dials; like
// the client, it takes host:port for nats://host:port.
func natsURL(s string) bool {
	if !strings.Contains(s, "://") {
		_, _, err := net.SplitHostPort(s)
		return err == nil
	}
	u, err := url.Parse(s)
	return err == nil && u.Host != "" && (u.Scheme == "nats" || u.Scheme == "tls" || u.Scheme == "ws" || u.Scheme == "wss")
}

// DatabaseURL returns the database to open: the configured URL, or the
// SQLite file in the data dir.
func (c Config) DatabaseURL() string {
	if c.Database.URL != "" {
		return c.Database.URL
	}
	return filepath.Join(c.DataDir, "cove.db")
}

// EnvName returns the environment variable of a key.
func EnvName(key string) string {
	return "COVE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Key describes one configuration key.
type Key struct {
	Name    string // dotted key, as in the YAML file
	Env     string
	Doc     string
	Default string
	Secret  bool
}

type keyDoc struct {
	doc    string
	secret bool
	def    func(Config) any
}

// keyDocs walks Config and returns every leaf key.
func keyDocs() map[string]keyDoc {
	out := map[string]keyDoc{}
	var walk func(t reflect.Type, prefix string, path []int)
	walk = func(t reflect.Type, prefix string, path []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := prefix + f.Tag.Get("koanf")
			p := append(append([]int(nil), path...), i)
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, name+".", p)
				continue
			}
			out[name] = keyDoc{doc: f.Tag.Get("doc"), secret: f.Tag.Get("secret") == "true", def: func(c Config) any {
				return reflect.ValueOf(c).FieldByIndex(p).Interface()
			}}
		}
	}
	walk(reflect.TypeOf(Config{}), "", nil)
	return out
}

// Keys lists every key with its environment variable, doc and default,
// sorted by name.
func Keys() []Key {
	d := Default()
	var ks []Key
	for name, kd := range keyDocs() {
		ks = append(ks, Key{Name: name, Env: EnvName(name), Doc: kd.doc, Default: fmt.Sprint(kd.def(d)), Secret: kd.secret})
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].Name < ks[j].Name })
	return ks
}

// Print returns "key = value" lines for the log at start, with secrets
// masked and the password of a database URL hidden.
func (c Config) Print() []string {
	var lines []string
	for name, kd := range keyDocs() {
		v := fmt.Sprint(kd.def(c))
		switch {
		case name == "database.url" && v != "":
			v = redactURL(v)
		case (name == "nats.url" || name == "nats.advertise_url") && v != "":
			// A NATS URL may carry a user and password; a list of them, too.
			parts := strings.Split(v, ",")
			for i, p := range parts {
				parts[i] = redactURL(strings.TrimSpace(p))
			}
			v = strings.Join(parts, ",")
		case kd.secret && v != "":
			v = "****"
		}
		lines = append(lines, name+" = "+v)
	}
	sort.Strings(lines)
	return lines
}

// redactURL hides the password in a URL, or all of it when it does not
// parse.
func redactURL(v string) string {
	if u, err := url.Parse(v); err == nil {
		return u.Redacted()
	}
	return "****"
}

// Environ is os.Environ, named so that callers read as configuration.
func Environ() []string { return os.Environ() }
