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
	Log      Log      `koanf:"log"`
}

// Node configures the node registry.
type Node struct {
	LostAfter time.Duration `koanf:"lost_after" doc:"a node silent this long is lost and its runs fail with node_lost"`
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
}

// Database selects the SQL store.
type Database struct {
	URL string `koanf:"url" secret:"true" doc:"postgres:// URL; empty means SQLite at <data_dir>/cove.db"`
}

// NATS selects the message bus.
type NATS struct {
	URL       string `koanf:"url" doc:"external NATS URL; empty runs an embedded server"`
	CredsFile string `koanf:"creds_file" doc:"user credentials for the external NATS"`
	// AccountSeedFile signs node and agent credentials on an external NATS.
	AccountSeedFile string `koanf:"account_seed_file" doc:"external NATS: seed of the account node and agent users belong to"`
	Host            string `koanf:"host" doc:"embedded server: address nodes and agents connect to"`
	Port            int    `koanf:"port" doc:"embedded server: port nodes and agents connect to; -1 picks a free one"`
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
		HTTP:    HTTP{Addr: "127.0.0.1:7100", MaxBodyBytes: 1 << 20},
		NATS:    NATS{Host: "127.0.0.1", Port: 7422},
		Auth: Auth{
			OpenSignup: true, AccessTTL: 15 * time.Minute, RefreshTTL: 30 * 24 * time.Hour, MaxTokenTTL: 365 * 24 * time.Hour,
			Argon2: identity.DefaultArgon2, LoginBurstPerEmail: 10, LoginBurstPerClient: 30, LoginRefill: 6 * time.Second,
		},
		Node: Node{LostAfter: 15 * time.Second},
		Run:  Run{QueueTimeout: 5 * time.Minute},
		Log:  Log{Level: "info", Format: "text"},
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
	for key, d := range map[string]time.Duration{"node.lost_after": c.Node.LostAfter, "run.queue_timeout": c.Run.QueueTimeout, "auth.access_ttl": c.Auth.AccessTTL, "auth.refresh_ttl": c.Auth.RefreshTTL, "auth.max_token_ttl": c.Auth.MaxTokenTTL, "auth.login_refill": c.Auth.LoginRefill} {
		if d <= 0 {
			bad(key, "must be positive")
		}
	}
	if c.Node.LostAfter > 0 && c.Node.LostAfter < 2*runproto.NodeHeartbeatInterval {
		bad("node.lost_after", "must be at least twice the node heartbeat interval ("+(2*runproto.NodeHeartbeatInterval).String()+"), or healthy nodes are declared lost")
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
			if u, err := url.Parse(v); err == nil {
				v = u.Redacted()
			} else {
				v = "****"
			}
		case kd.secret && v != "":
			v = "****"
		}
		lines = append(lines, name+" = "+v)
	}
	sort.Strings(lines)
	return lines
}

// Environ is os.Environ, named so that callers read as configuration.
func Environ() []string { return os.Environ() }
