package computenode

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/runproto"
)

// EnvToken is the environment variable that can hold the enrollment
// token, so it does not show in the process list.
const EnvToken = "COVE_NODE_TOKEN"

// Command returns `run`, the command that runs a compute node until it is
// interrupted; the CLI adds it under `cove node`.
func Command() *cobra.Command {
	var (
		server, token, name, dataDir string
		caFile, caFingerprint        string
		labels, drivers              []string
		cpus                         float64
		memory, disk, logLevel       string
		inputCache                   string
	)
	cmd := &cobra.Command{
		Use:   "run --server URL --token ENROLL_TOKEN",
		Short: "Run a compute node: contribute this host's capacity to a Cove control plane",
		Long: `Run a compute node until interrupted.

The first start enrolls the node with the control plane (--server, --token):
the node makes its own keys and receives a client certificate from Cove's
CA and a NATS user JWT, kept with the keys in DATA_DIR/node.json (mode 0600);
later starts reuse it and need neither flag. Trust the control plane's
HTTPS certificate at enrollment with --ca-fingerprint (printed by cove
serve) or --ca-file; afterwards the node trusts the CA chain it was given.
It renews its certificate by itself at two thirds of its lifetime. The node then heartbeats its
capacity and drivers and runs one sandbox per computation run the control
plane starts on it. See docs/node-operator.md.`,
		Example: `  cove node run --server https://cove.example.com --token cve_... --ca-fingerprint sha256:... --label region=eu
  COVE_NODE_TOKEN=cve_... cove node run --server https://127.0.0.1:7100 --ca-file cove-ca.pem --drivers wasm`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("server") {
				// `cove --server URL node run` sets the CLI's global flag.
				if f := cmd.Root().PersistentFlags().Lookup("server"); f != nil && f.Changed {
					server = f.Value.String()
				}
			}
			if token == "" {
				token = os.Getenv(EnvToken)
			}
			log, err := newLogger(cmd, logLevel)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("ca-file") && !cmd.Flags().Changed("ca-fingerprint") {
				// `cove --ca-fingerprint FP node run` sets the CLI's global flags.
				for _, g := range []struct {
					name string
					dst  *string
				}{{"ca-file", &caFile}, {"ca-fingerprint", &caFingerprint}} {
					if f := cmd.Root().PersistentFlags().Lookup(g.name); f != nil && f.Changed {
						*g.dst = f.Value.String()
					}
				}
			}
			cfg := Config{ServerURL: server, Token: token, Name: name, DataDir: dataDir, Log: log, CAFile: caFile, CAFingerprint: caFingerprint}
			if cfg.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if cfg.Capacity, err = parseCapacity(cpus, memory, disk); err != nil {
				return err
			}
			if cfg.InputCacheBytes, err = parseInputCache(inputCache); err != nil {
				return err
			}
			if dataDir == "" {
				return cove.Errorf(cove.Invalid, "--data-dir must not be empty")
			}
			if err := os.MkdirAll(dataDir, 0o711); err != nil {
				return &cove.Error{Code: cove.Invalid, Message: "cannot create the data directory " + dataDir, Err: err}
			}
			ds, closers, err := openDrivers(dataDir, drivers, log)
			if err != nil {
				return err
			}
			cfg.Drivers = ds
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
				defer cancel()
				for _, c := range closers {
					_ = c(ctx)
				}
			}()

			ctx := cmd.Context()
			n, err := Start(ctx, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "node %s running; stop it with Ctrl-C\n", n.ID())
			select {
			case <-ctx.Done():
				log.Info("shutting down: stopping runs")
				return n.Close()
			case <-n.Done():
				_ = n.Close()
				return cove.Errorf(cove.Unavailable,
					"the node's NATS connection closed for good: its credential may be revoked or expired (remove %s/node.json and enroll again)", dataDir)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "URL of the Cove control plane to enroll with")
	f.StringVar(&caFile, "ca-file", "", "PEM CA file to trust the control plane's HTTPS certificate by, at enrollment")
	f.StringVar(&caFingerprint, "ca-fingerprint", "", "SHA-256 fingerprint of the control plane's CA (cove serve prints it), to trust its HTTPS certificate at enrollment")
	f.StringVar(&token, "token", "", "one-time enrollment token (env "+EnvToken+"); needed for the first start only")
	f.StringVar(&name, "name", "", "name of the node in the registry (default: the host name)")
	f.StringVar(&dataDir, "data-dir", "./"+DefaultDataDir, "directory of the node's identity, caches and work directories")
	f.StringArrayVar(&labels, "label", nil, "label k=v computations can select the node by (repeatable)")
	f.Float64Var(&cpus, "cpus", 0, "CPUs offered (default: all of the host's)")
	f.StringVar(&memory, "memory", "", "memory offered, in bytes or with a unit such as 16GiB (default: the host's total)")
	f.StringVar(&disk, "disk", "", "disk offered for work directories, as --memory (default: free space in --data-dir)")
	f.StringSliceVar(&drivers, "drivers", nil, "sandbox drivers to offer, of "+strings.Join(DriverNames, ",")+" (default: every driver that works here)")
	f.StringVar(&inputCache, "input-cache", humanize.IBytes(DefaultInputCacheBytes), "disk kept for received inputs in --data-dir/cache, as --memory; 0 turns the cache off")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func newLogger(cmd *cobra.Command, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, cove.Errorf(cove.Invalid, "--log-level must be debug, info, warn or error, not %q", level)
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: l})), nil
}

func parseLabels(kvs []string) (map[string]string, error) {
	labels := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, cove.Errorf(cove.Invalid, "--label %q is not key=value", kv)
		}
		if _, dup := labels[k]; dup {
			return nil, cove.Errorf(cove.Invalid, "--label %s is given twice", k)
		}
		labels[k] = v
	}
	return labels, nil
}

func parseCapacity(cpus float64, memory, disk string) (runproto.Resources, error) {
	r := runproto.Resources{CPUs: cpus}
	if cpus < 0 || math.IsNaN(cpus) || math.IsInf(cpus, 0) {
		return r, cove.Errorf(cove.Invalid, "--cpus must be a positive number")
	}
	for _, f := range []struct {
		flag, value string
		dst         *int64
	}{{"--memory", memory, &r.MemoryBytes}, {"--disk", disk, &r.DiskBytes}} {
		if f.value == "" {
			continue
		}
		b, err := humanize.ParseBytes(f.value)
		if err != nil || b > math.MaxInt64 {
			return r, cove.Errorf(cove.Invalid, "%s %q is not a size such as 8589934592 or 8GiB", f.flag, f.value)
		}
		*f.dst = int64(b)
	}
	return r, nil
}

// parseInputCache reads --input-cache: a size, where 0 turns the cache off.
func parseInputCache(size string) (int64, error) {
	b, err := humanize.ParseBytes(size)
	if err != nil || b > math.MaxInt64 {
		return 0, cove.Errorf(cove.Invalid, "--input-cache %q is not a size such as 4GiB, or 0", size)
	}
	if b == 0 {
		return -1, nil
	}
	return int64(b), nil
}
