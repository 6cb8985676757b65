package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sdk"
)

// addComputationCommands adds the computation commands.
func (a *app) addComputationCommands(root *cobra.Command) {
	cmd := groupCommand(&cobra.Command{
		Use:     "computation",
		Aliases: []string{"computations", "comp"},
		Short:   "Computations: assemble, approve, run, follow and collect results",
		Long: `A computation runs one algorithm over one or more datasets for its result
consumers, within limits. Its manifest pins every part by SHA-256; every
participant sees the same digest. Runs need each dataset's policy to allow
the algorithm and, where the policy says so, its provider's approval.`,
	})
	cmd.AddCommand(
		a.computationCreateCommand(),
		a.computationListCommand(),
		a.computationGetCommand(),
		a.computationManifestCommand(),
		a.computationDeleteCommand(),
		a.computationDryRunCommand(),
		a.computationDecideCommand("approve"),
		a.computationDecideCommand("reject"),
		a.computationRunCommand(),
		a.computationRunsCommand(),
		a.runStopCommand(),
		a.runRestartCommand(),
		a.runStatusCommand(),
		a.runLogsCommand(),
		a.runResultCommand(),
	)
	root.AddCommand(cmd)
}

// sizePattern is a byte size such as 512, 256Mi, 1Gi, 1.5G or 100MB.
var sizePattern = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?)?B?$`)

// parseSize reads a byte size: binary units Ki, Mi, Gi, Ti or decimal K,
// M, G, T.
func parseSize(flag, s string) (int64, error) {
	m := sizePattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, usagef("%s %q is not a size such as 256Mi, 1Gi or 500M", flag, s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, usagef("%s %q is not a size", flag, s)
	}
	unit := map[string]float64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m[2]]
	v := n * unit
	if v > 1<<62 {
		return 0, usagef("%s %q is too large", flag, s)
	}
	return int64(v), nil
}

// recipientFromFile reads an age X25519 recipient from a file holding
// either an identity (AGE-SECRET-KEY-1..., whose recipient is derived) or
// a recipient (age1...).
func recipientFromFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("--key: %v", err)
	}
	if ids, err := age.ParseIdentities(strings.NewReader(string(data))); err == nil {
		for _, id := range ids {
			if x, ok := id.(*age.X25519Identity); ok {
				return x.Recipient().String(), nil
			}
		}
	}
	if rs, err := age.ParseRecipients(strings.NewReader(string(data))); err == nil {
		for _, r := range rs {
			if x, ok := r.(*age.X25519Recipient); ok {
				return x.String(), nil
			}
		}
	}
	return "", usagef("--key %s holds no age X25519 identity (AGE-SECRET-KEY-1...) or recipient (age1...); make one with age-keygen", path)
}

// specFlags are the flags that define a computation.
type specFlags struct {
	algorithm, name, description string
	datasets, consumers, args    []string
	labels                       map[string]string
	consumerMe                   bool
	key                          string
	cpus                         float64
	memory, disk                 string
	maxDuration                  time.Duration
	network                      bool
}

func (f *specFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.algorithm, "algorithm", "", "ID of the algorithm to run (required)")
	fl.StringArrayVar(&f.datasets, "dataset", nil, "NAME=ID: a dataset, seen in the sandbox as /cove/inputs/NAME (repeatable; at least one)")
	fl.StringArrayVar(&f.consumers, "consumer", nil, "USER_ID=age1...: a result consumer and the age recipient results are sealed to (repeatable)")
	fl.BoolVar(&f.consumerMe, "consumer-me", false, "make yourself a result consumer, with the key in --key")
	fl.StringVar(&f.key, "key", "", "file with your age identity or recipient, for --consumer-me (default <config dir>/"+identityFileName+", from cove keys generate)")
	fl.StringVar(&f.name, "name", "", "name (default: the algorithm's)")
	fl.StringVar(&f.description, "description", "", "description")
	fl.StringArrayVar(&f.args, "arg", nil, "an argument for the algorithm, after its own (repeatable)")
	fl.StringToStringVar(&f.labels, "label", nil, "KEY=VALUE: a label the node must carry (repeatable)")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPUs per run (default 1)")
	fl.StringVar(&f.memory, "memory", "", "memory per run, such as 256Mi (default 512Mi)")
	fl.StringVar(&f.disk, "disk", "", "disk per run, such as 1Gi (default 1Gi)")
	fl.DurationVar(&f.maxDuration, "max-duration", 0, "longest a run may take, such as 10m (default 1h)")
	fl.BoolVar(&f.network, "network", false, "give the sandbox network access (every dataset's policy must allow it)")
}

// spec turns the flags into a spec, checking what the CLI can.
func (f *specFlags) spec(cmd *cobra.Command, a *app, c *sdk.Client) (computation.Spec, error) {
	s := computation.Spec{
		Name: f.name, Description: f.description, AlgorithmID: f.algorithm, Args: f.args, Labels: f.labels, Network: f.network,
		Datasets: []computation.DatasetRef{}, ResultConsumers: []computation.ResultConsumer{},
	}
	if f.algorithm == "" {
		return s, usagef("--algorithm is required")
	}
	if len(f.datasets) == 0 {
		return s, usagef("give at least one --dataset NAME=ID")
	}
	for _, d := range f.datasets {
		name, id, ok := strings.Cut(d, "=")
		if !ok || name == "" || id == "" {
			return s, usagef("--dataset %q is not NAME=ID", d)
		}
		s.Datasets = append(s.Datasets, computation.DatasetRef{Name: name, DatasetID: id})
	}
	for _, rc := range f.consumers {
		user, key, _ := strings.Cut(rc, "=")
		if user == "" {
			return s, usagef("--consumer %q is not USER_ID=age1...", rc)
		}
		s.ResultConsumers = append(s.ResultConsumers, computation.ResultConsumer{UserID: user, Recipient: key})
	}
	if f.key != "" && !f.consumerMe {
		return s, usagef("--key is for --consumer-me")
	}
	if f.consumerMe {
		if f.key == "" {
			var err error
			if f.key, err = a.defaultIdentity(); err != nil {
				return s, err
			}
		}
		key, err := recipientFromFile(f.key)
		if err != nil {
			return s, err
		}
		me, err := c.Me(cmd.Context())
		if err != nil {
			return s, err
		}
		s.ResultConsumers = append(s.ResultConsumers, computation.ResultConsumer{UserID: me.ID, Recipient: key})
	}
	s.Limits.CPUs = f.cpus
	var err error
	if f.memory != "" {
		if s.Limits.MemoryBytes, err = parseSize("--memory", f.memory); err != nil {
			return s, err
		}
	}
	if f.disk != "" {
		if s.Limits.DiskBytes, err = parseSize("--disk", f.disk); err != nil {
			return s, err
		}
	}
	if f.maxDuration < 0 || f.maxDuration%time.Second != 0 {
		return s, usagef("--max-duration must be a whole number of seconds, such as 90s or 10m")
	}
	s.Limits.MaxDurationSeconds = int64(f.maxDuration / time.Second)
	return s, nil
}

func (a *app) computationCreateCommand() *cobra.Command {
	var f specFlags
	cmd := &cobra.Command{
		Use:   "create WORKSPACE",
		Short: "Create a computation in a workspace",
		Long: `Create a computation in a workspace: one algorithm, datasets each under a
directory name, result consumers with their age keys, and limits.

  cove computation create ws_... --algorithm alg_... --dataset people=ds_... \
      --consumer-me --key ~/.config/cove/key.txt --memory 256Mi --max-duration 10m

Each dataset's policy is checked when it runs; see what stands in the way
with ` + "`cove computation dryrun`" + `.`,
		Args: exactly("WORKSPACE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			spec, err := f.spec(cmd, a, c)
			if err != nil {
				return err
			}
			comp, err := c.CreateComputation(cmd.Context(), args[0], spec)
			if err != nil {
				return err
			}
			return a.show(cmd, comp, func(w io.Writer) {
				fmt.Fprintf(w, "Created computation %q (%s).\nmanifest sha256: %s\n", comp.Name, comp.ID, comp.ManifestSHA256)
				fmt.Fprintf(w, "Next: cove computation dryrun %s\n", comp.ID)
			})
		},
	}
	f.register(cmd)
	return cmd
}

func (a *app) computationListCommand() *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:   "list [WORKSPACE]",
		Short: "List the computations of your workspaces and those you take part in",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			ws := ""
			if len(args) == 1 {
				ws = args[0]
			}
			return list(cmd, a, &lf, columns[*computation.Computation]{
				noun:   "computations",
				header: []string{"ID", "NAME", "WORKSPACE", "MANIFEST", "FROZEN", "CREATED"},
				row: func(x *computation.Computation) []string {
					return []string{x.ID, x.Name, x.WorkspaceID, x.ManifestSHA256[:12], yesNo(x.Frozen), formatTime(x.CreatedAt)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*computation.Computation, string, error) {
				return c.ListComputations(ctx, ws, o)
			})
		},
	}
	lf.register(cmd)
	return cmd
}

func (a *app) computationGetCommand() *cobra.Command {
	return showCommand(a, "get", "Show a computation, its manifest digest and approvals", (*sdk.Client).GetComputation, printComputation)
}

func printComputation(w io.Writer, x *computation.Computation) {
	var ds, rcs, aps []string
	for _, d := range x.Datasets {
		ds = append(ds, d.Name+"="+d.DatasetID)
	}
	for _, rc := range x.ResultConsumers {
		rcs = append(rcs, rc.UserID+"="+orDash(rc.Recipient))
	}
	for _, ap := range x.Approvals {
		aps = append(aps, ap.DatasetID+" "+ap.Decision+" by "+ap.UserID)
	}
	l := x.Limits
	fields(w,
		"id", x.ID, "name", x.Name, "workspace", x.WorkspaceID,
		"algorithm", x.AlgorithmID+" (sha256 "+x.Manifest.Algorithm.SHA256+")",
		"datasets", strings.Join(ds, ", "), "result consumers", orDash(strings.Join(rcs, ", ")),
		"limits", fmt.Sprintf("%g CPUs, %s memory, %s disk, %d s", l.CPUs, formatSize(l.MemoryBytes), formatSize(l.DiskBytes), l.MaxDurationSeconds),
		"network", yesNo(x.Network), "tee", x.Manifest.RequiredTEE,
		"approvals", orDash(strings.Join(aps, "; ")), "frozen", yesNo(x.Frozen),
		"manifest sha256", x.ManifestSHA256, "created", formatTime(x.CreatedAt),
	)
}

func (a *app) computationManifestCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "manifest ID",
		Short: "Print a computation's manifest exactly as hashed",
		Long: `Print a computation's manifest exactly as the server hashed it (RFC 8785
canonical JSON), after checking its SHA-256 against the server's. Check it
yourself with: cove computation manifest ID | sha256sum`,
		Args: exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			b, sum, err := c.ComputationManifest(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if _, err := cmd.OutOrStdout().Write(b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "\nsha256: %s\n", sum)
			return nil
		},
	}
}

func (a *app) computationDeleteCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a computation with its runs (not while one is active)",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			if !yes {
				if err := confirm(cmd, fmt.Sprintf("Delete computation %s with all its runs?", args[0]), "--yes"); err != nil {
					return err
				}
			}
			if err := c.DeleteComputation(cmd.Context(), args[0]); err != nil {
				return err
			}
			a.done(cmd, "Deleted computation %s.", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask to confirm")
	return cmd
}

func (a *app) computationDryRunCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dryrun ID",
		Short: "List everything that keeps a computation from running now",
		Long: `List everything that keeps you from running a computation now, all at once:
policies, missing approvals, result consumers without keys, no fitting
node, missing permission. Exits 1 when there is anything.`,
		Args: exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			d, err := c.DryRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			err = a.show(cmd, d, func(w io.Writer) {
				if d.Runnable {
					fmt.Fprintf(w, "Computation %s can run (manifest sha256 %s).\n", d.ComputationID, d.ManifestSHA256)
					return
				}
				fmt.Fprintf(w, "Computation %s cannot run yet:\n", d.ComputationID)
				for _, b := range d.Blockers {
					fmt.Fprintf(w, "  - %s: %s\n", b.Kind, b.Message)
				}
			})
			if err != nil || d.Runnable {
				return err
			}
			return fmt.Errorf("computation %s has %d blocker(s)", d.ComputationID, len(d.Blockers))
		},
	}
}

func (a *app) computationDecideCommand(verb string) *cobra.Command {
	var d computation.Decision
	short := "Approve the datasets you provide to a computation (admins of their workspaces)"
	if verb == "reject" {
		short = "Reject the datasets you provide to a computation; runs stay blocked"
	}
	cmd := &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Long: short + `.

Without --dataset it decides for every dataset of the computation whose
workspace you administer. A decision holds for the current manifest: if the
computation changes, it needs a new one.`,
		Args: exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			decide := c.Approve
			if verb == "reject" {
				decide = c.Reject
			}
			x, err := decide(cmd.Context(), args[0], d)
			if err != nil {
				return err
			}
			return a.show(cmd, x, func(w io.Writer) {
				for _, ap := range x.Approvals {
					if ap.UserID != "" {
						fmt.Fprintf(w, "dataset %s: %s by %s\n", ap.DatasetID, ap.Decision, ap.UserID)
					}
				}
				fmt.Fprintf(w, "manifest sha256: %s\n", x.ManifestSHA256)
			})
		},
	}
	cmd.Flags().StringVar(&d.DatasetID, "dataset", "", "decide for this dataset only")
	cmd.Flags().StringVar(&d.Comment, "comment", "", "a note for the computation's participants")
	return cmd
}

func (a *app) computationRunCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "run ID",
		Short: "Start a run of a computation",
		Long: `Start a run of a computation. If anything blocks it, every blocker is
listed. With --follow, print its log as it comes and exit when the run
ends: 0 when it succeeded, 1 otherwise. With -o json every object (the run,
each log line, the run as it ended) is one JSON line.`,
		Args: exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			r, err := c.StartRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !follow {
				return a.show(cmd, r, func(w io.Writer) {
					fmt.Fprintf(w, "Started run %s (%s).\nFollow it with: cove computation logs %s --follow\n", r.ID, r.State, r.ID)
				})
			}
			if a.json() {
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(r); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "Started run %s.\n", r.ID)
			}
			return a.follow(cmd, c, r.ID, sdk.LogOptions{Follow: true}, true)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print the log until the run ends")
	return cmd
}

// follow prints a run's log lines as they arrive: in text, stdout lines to
// stdout and stderr lines to stderr; with -o json, one JSON line each.
// When following to the end it reports how the run ended, and with
// failOnEnd returns an error unless it succeeded.
func (a *app) follow(cmd *cobra.Command, c *sdk.Client, runID string, opts sdk.LogOptions, failOnEnd bool) error {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	enc := json.NewEncoder(out)
	end, err := c.Logs(cmd.Context(), runID, opts, func(l runproto.LogLine) error {
		if a.json() {
			return enc.Encode(l)
		}
		w := out
		if l.Stream == "stderr" {
			w = errOut
		}
		_, err := fmt.Fprintln(w, l.Text)
		return err
	})
	if err != nil || end == nil {
		return err
	}
	if a.json() {
		if err := enc.Encode(end); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(errOut, "Run %s %s.\n", end.ID, runEnd(end))
	}
	if failOnEnd && end.State != computation.Succeeded {
		return fmt.Errorf("run %s %s", end.ID, runEnd(end))
	}
	return nil
}

// runEnd says how a run ended: "succeeded", "failed (oom: ...)".
func runEnd(r *computation.Run) string {
	s := string(r.State)
	if r.Reason != "" {
		why := string(r.Reason)
		if r.ExitCode != nil {
			why += fmt.Sprintf(", exit code %d", *r.ExitCode)
		}
		if r.Message != "" {
			why += ": " + r.Message
		}
		s += " (" + why + ")"
	}
	return s
}

func (a *app) computationRunsCommand() *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:   "runs ID",
		Short: "List a computation's runs, oldest first",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*computation.Run]{
				noun:   "runs",
				header: []string{"ID", "STATE", "REASON", "NODE", "CREATED", "FINISHED"},
				row: func(r *computation.Run) []string {
					return []string{r.ID, string(r.State), orDash(string(r.Reason)), orDash(r.NodeID), formatTime(r.CreatedAt), formatTimePtr(r.FinishedAt)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*computation.Run, string, error) {
				return c.ListRuns(ctx, args[0], o)
			})
		},
	}
	lf.register(cmd)
	return cmd
}

func (a *app) runStopCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stop RUN",
		Short: "Stop a run",
		Args:  exactly("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			r, err := c.StopRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(cmd, r, func(w io.Writer) { fmt.Fprintf(w, "Run %s %s.\n", r.ID, runEnd(r)) })
		},
	}
}

func (a *app) runRestartCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "restart RUN",
		Short: "Start a new run of the computation of a run that has ended",
		Args:  exactly("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			r, err := c.RestartRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(cmd, r, func(w io.Writer) { fmt.Fprintf(w, "Started run %s (%s).\n", r.ID, r.State) })
		},
	}
}

func (a *app) runStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status RUN",
		Short: "Show a run and its history",
		Long:  "Show a run and its history. With -o json: {\"run\": ..., \"events\": [...]}.",
		Args:  exactly("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			r, err := c.GetRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			events, err := c.RunEvents(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			v := struct {
				Run    *computation.Run        `json:"run"`
				Events []*computation.RunEvent `json:"events"`
			}{r, events}
			return a.show(cmd, v, func(w io.Writer) {
				exit := "-"
				if r.ExitCode != nil {
					exit = strconv.Itoa(*r.ExitCode)
				}
				result := "-"
				if r.ResultSHA256 != "" {
					result = fmt.Sprintf("%s (%d bytes)", r.ResultSHA256, r.ResultSize)
				}
				fields(w, "id", r.ID, "computation", r.ComputationID, "state", runEnd(r), "exit code", exit,
					"node", orDash(r.NodeID), "driver", r.Driver, "manifest sha256", r.ManifestSHA256,
					"cpu seconds", strconv.FormatFloat(r.CPUSeconds, 'f', -1, 64), "peak memory", formatSize(r.PeakMemory),
					"result", result, "created", formatTime(r.CreatedAt), "started", formatTimePtr(r.StartedAt), "finished", formatTimePtr(r.FinishedAt))
				fmt.Fprintln(w)
				rows := make([][]string, len(events))
				for i, e := range events {
					rows[i] = []string{strconv.FormatInt(e.Seq, 10), e.Time.Local().Format("15:04:05.000"), string(e.State), orDash(string(e.Reason)), e.Message}
				}
				table(w, []string{"SEQ", "TIME", "STATE", "REASON", "MESSAGE"}, rows)
			})
		},
	}
}

func (a *app) runLogsCommand() *cobra.Command {
	var opts sdk.LogOptions
	cmd := &cobra.Command{
		Use:   "logs RUN",
		Short: "Print a run's log; --follow waits for more until the run ends",
		Long: `Print a run's log: the algorithm's stdout to stdout, its stderr to stderr.
With --follow, keep printing lines as they come until the run ends. With -o
json, one JSON line per log line.`,
		Args: exactly("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return a.follow(cmd, c, args[0], opts, false)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "wait for new lines until the run ends")
	cmd.Flags().Int64Var(&opts.After, "after", 0, "only lines after this seq")
	return cmd
}

func (a *app) runResultCommand() *cobra.Command {
	var dir, identity string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "result RUN -o DIR --identity KEYFILE",
		Short: "Download a run's result, decrypt it and unpack it into a directory",
		Long: `Download a run's sealed result (result consumers only), decrypt it with
your age identity and unpack its files into DIR, which must not exist or be
empty. Nothing is left in DIR unless the whole result downloaded, matched
its SHA-256 and decrypted.

Here -o names the directory; pass --json for a JSON summary.`,
		Args: exactly("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usagef("give the directory to unpack into with -o DIR")
			}
			if identity == "" {
				var err error
				if identity, err = a.defaultIdentity(); err != nil {
					return err
				}
			}
			ids, err := readIdentities(identity)
			if err != nil {
				return err
			}
			if err := emptyDir(dir); err != nil {
				return err
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			res, err := c.OpenResult(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer res.Body.Close()
			files, err := unseal(cmd, res, ids, identity, dir)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"run_id": args[0], "dir": dir, "sha256": res.SHA256, "size": res.Size, "files": files})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote %d file(s) to %s (sealed result sha256 %s).\n", files, dir, res.SHA256)
			return nil
		},
	}
	// -o is the directory here, not the output format.
	cmd.Flags().StringVarP(&dir, "output", "o", "", "directory to unpack the result into (required)")
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file (AGE-SECRET-KEY-1...) of a result consumer (default <config dir>/"+identityFileName+", from cove keys generate)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary")
	return cmd
}

// defaultIdentity returns the identity file `cove keys generate` writes
// by default.
func (a *app) defaultIdentity() (string, error) {
	d, err := a.dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, identityFileName), nil
}

// readIdentities reads the age identities in path.
func readIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("--identity: %v", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, usagef("--identity %s is not an age identity file (AGE-SECRET-KEY-1... lines): %v", path, err)
	}
	return ids, nil
}

// emptyDir checks that dir does not exist or is an empty directory.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return usagef("-o %s: %v", dir, err)
	case len(entries) > 0:
		return usagef("-o %s is not empty; results are unpacked into a new or empty directory", dir)
	}
	return nil
}

// unseal downloads res with a progress bar on stderr, decrypts it with ids
// and unpacks it into dir through a fresh directory beside it, renamed
// only when everything checked out. It returns the number of files.
func unseal(cmd *cobra.Command, res *sdk.Result, ids []age.Identity, identityPath, dir string) (_ int, err error) {
	// Like upload bars, the bar shows only on a terminal, not in logs.
	w := cmd.ErrOrStderr()
	f, tty := w.(*os.File)
	visible := tty && term.IsTerminal(int(f.Fd()))
	bar := progressbar.NewOptions64(res.Size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetVisibility(visible),
		progressbar.OptionSetDescription("downloading result"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	defer func() {
		if err != nil && visible {
			_ = bar.Exit() // ends the bar's line before the error
		}
	}()
	sealed := io.TeeReader(res.Body, bar)
	plain, err := age.Decrypt(sealed, ids...)
	if err != nil {
		var (
			nomatch *age.NoIdentityMatchError
			ce      *cove.Error
		)
		if errors.As(err, &ce) {
			return 0, err // the download failed
		}
		if errors.As(err, &nomatch) {
			return 0, cove.Errorf(cove.Forbidden, "the identity in %s cannot decrypt this result: it is sealed to other keys; use the identity whose recipient you gave as result consumer", identityPath)
		}
		return 0, cove.Errorf(cove.Invalid, "the result is not a valid age file: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, cove.Wrap(err, "could not resolve "+dir)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".partial-")
	if err != nil {
		return 0, cove.Errorf(cove.Invalid, "could not create a directory beside %s: %v", dir, err)
	}
	defer os.RemoveAll(tmp) // gone after the rename
	if err := blob.ExtractTar(plain, tmp, max(res.Size, 1)); err != nil {
		return 0, err
	}
	// Reading to the end makes the download check its SHA-256.
	if _, err := io.Copy(io.Discard, sealed); err != nil {
		return 0, err
	}
	_ = bar.Finish()
	if err := os.Remove(abs); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, usagef("-o %s: %v", dir, err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		return 0, cove.Errorf(cove.Internal, "could not move the result into %s: %v", dir, err)
	}
	files := 0
	_ = filepath.WalkDir(abs, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files++
		}
		return nil
	})
	return files, nil
}
