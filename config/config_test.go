package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/config"
)

func flags(t *testing.T, args ...string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestDefaults(t *testing.T) {
	c, err := config.Load(flags(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != "127.0.0.1:7100" || c.NATS.Port != 7422 || c.DataDir != "./cove-data" || c.HTTP.MaxBodyBytes != 1<<20 {
		t.Fatalf("defaults: %+v", c)
	}
	if c.DatabaseURL() != filepath.Join("cove-data", "cove.db") {
		t.Fatalf("default database: %s", c.DatabaseURL())
	}
}

func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cove.yaml")
	err := os.WriteFile(file, []byte("data_dir: /from/file\nhttp:\n  addr: 127.0.0.1:1111\nauth:\n  access_ttl: 5m\nlog:\n  level: debug\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"COVE_HTTP_ADDR=127.0.0.1:2222", "COVE_DATA_DIR=/from/env", "COVE_AUTH_ARGON2_TIME=3", "OTHER=1"}
	c, err := config.Load(flags(t, "--config", file, "--data-dir", "/from/flag"), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/from/flag" {
		t.Errorf("data_dir = %s, want the flag's", c.DataDir)
	}
	if c.HTTP.Addr != "127.0.0.1:2222" {
		t.Errorf("http.addr = %s, want the environment's over the file's", c.HTTP.Addr)
	}
	if c.Auth.AccessTTL != 5*time.Minute || c.Log.Level != "debug" {
		t.Errorf("file values lost: %v %s", c.Auth.AccessTTL, c.Log.Level)
	}
	if c.Auth.Argon2.Time != 3 {
		t.Errorf("nested env key lost: %+v", c.Auth.Argon2)
	}
}

func TestInvalid(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"bad addr", []string{"--http-addr", "nope"}, nil, "http.addr"},
		{"sqlite url", []string{"--database-url", "mysql://x"}, nil, "database.url"},
		{"nats 4222", []string{"--nats-port", "4222"}, nil, "nats.port"},
		{"nats creds without url", []string{"--nats-creds", "x.creds"}, nil, "nats.creds_file applies only to an external NATS"},
		{"nats operator seed without url", []string{"--nats-operator-seed", "op.nk"}, nil, "nats.operator_seed_file applies only to an external NATS"},
		{"nats bad url", []string{"--nats-url", "http://nats:4222"}, nil, "nats.url not a NATS URL"},
		{"nats bad url in a list", []string{"--nats-url", "nats://a:4222,,"}, nil, "nats.url not a NATS URL"},
		{"nats bad advertise url", nil, []string{"COVE_NATS_ADVERTISE_URL=nats"}, "nats.advertise_url"},
		{"nats operator seed without system creds", []string{"--nats-url", "nats://n:4222", "--nats-operator-seed", "op.nk", "--nats-account-seed", "a.nk"}, nil, "nats.system_creds_file required with nats.operator_seed_file"},
		{"nats operator seed without account seed", []string{"--nats-url", "nats://n:4222", "--nats-operator-seed", "op.nk", "--nats-system-creds", "s.creds"}, nil, "nats.account_seed_file required with nats.operator_seed_file"},
		{"nats system creds alone", []string{"--nats-url", "nats://n:4222", "--nats-system-creds", "s.creds"}, nil, "nats.system_creds_file used only with nats.operator_seed_file"},
		{"nats replicas", nil, []string{"COVE_NATS_STREAM_REPLICAS=0"}, "nats.stream_replicas"},
		{"bad level", nil, []string{"COVE_LOG_LEVEL=loud"}, "log.level"},
		{"lost_after under two heartbeats", nil, []string{"COVE_NODE_LOST_AFTER=9s"}, "node.lost_after"},
		{"lost_after under two given heartbeats", nil, []string{"COVE_NODE_HEARTBEAT_INTERVAL=1s", "COVE_NODE_LOST_AFTER=1500ms"}, "node.lost_after"},
		{"heartbeat interval too short", nil, []string{"COVE_NODE_HEARTBEAT_INTERVAL=10ms"}, "node.heartbeat_interval"},
		{"bad duration", nil, []string{"COVE_AUTH_ACCESS_TTL=soon"}, "bad configuration value"},
		{"negative ttl", nil, []string{"COVE_AUTH_REFRESH_TTL=-1h"}, "auth.refresh_ttl"},
		{"short secret", nil, []string{"COVE_AUTH_TOKEN_SECRET=short"}, "auth.token_secret"},
		{"unknown file key", []string{"--config", write("unknown.yaml", "htp:\n  addr: x\n")}, nil, `unknown configuration key "htp.addr"`},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml")}, nil, "could not read"},
		{"bad yaml", []string{"--config", write("bad.yaml", "http: [\n")}, nil, "could not read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Load(flags(t, c.args...), c.env)
			if cove.ErrorCode(err) != cove.Invalid || !strings.Contains(cove.ErrorMessage(err), c.want) {
				t.Fatalf("error = %v, want invalid mentioning %q", err, c.want)
			}
		})
	}
}

func TestPrintMasksSecrets(t *testing.T) {
	c := config.Default()
	c.Database.URL = "postgres://cove:hunter2@db:5432/cove"
	c.Auth.TokenSecret = strings.Repeat("s", 40)
	c.NATS.URL = "nats://cove:natspw1@a:4222, nats://cove:natspw2@b:4222"
	c.NATS.AdvertiseURL = "nats://cove:natspw3@public:4222"
	out := strings.Join(c.Print(), "\n")
	if strings.Contains(out, "hunter2") || strings.Contains(out, c.Auth.TokenSecret) || strings.Contains(out, "natspw") {
		t.Fatalf("secret printed:\n%s", out)
	}
	if !strings.Contains(out, "postgres://cove:xxxxx@db:5432/cove") || !strings.Contains(out, "auth.token_secret = ****") {
		t.Fatalf("masked values missing:\n%s", out)
	}
}

// TestDocsListEveryKey keeps docs/configuration.md in step with Config.
func TestDocsListEveryKey(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, k := range config.Keys() {
		if !strings.Contains(doc, "`"+k.Name+"`") || !strings.Contains(doc, "`"+k.Env+"`") {
			t.Errorf("docs/configuration.md does not describe %s (%s)", k.Name, k.Env)
		}
	}
}
