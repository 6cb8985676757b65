package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/sdk"
)

// addCatalogCommands adds the keys, dataset and algorithm commands.
func (a *app) addCatalogCommands(root *cobra.Command) {
	root.AddCommand(a.keysCommand(), a.datasetCommand(), a.algorithmCommand())
}

// identityFileName is where `cove keys generate` writes without --out.
const identityFileName = "age-identity.txt"

func (a *app) keysCommand() *cobra.Command {
	var out string
	gen := &cobra.Command{
		Use:   "generate [-o FILE]",
		Short: "Make an age X25519 key pair for receiving sealed results",
		Long: `Make an age X25519 key pair. The identity (the secret half) goes to a new
file only you can read: FILE, or ` + identityFileName + ` in the configuration
directory. The recipient (the public half, "age1...") is printed, to give
as a result consumer's key. Results sealed to it open with
  age --decrypt -i FILE

As with age-keygen, -o here names the identity file, not an output format.`,
		Args: exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == outputJSON || out == outputTable {
				return usagef("-o names the identity file here, as with age-keygen; the recipient is always printed as one line")
			}
			if out == "" {
				d, err := a.dir()
				if err != nil {
					return err
				}
				if err := os.MkdirAll(d, 0o700); err != nil {
					return fmt.Errorf("could not create %s: %w", d, err)
				}
				out = filepath.Join(d, identityFileName)
			}
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return fmt.Errorf("could not make a key: %w", err)
			}
			recipient := id.Recipient().String()
			content := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().Format(time.RFC3339), recipient, id)
			// O_EXCL: an identity may be the only way to open results
			// already sealed to it, so it is never overwritten.
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, os.ErrExist) {
				return usagef("%s exists already and may be the only key to results sealed to it; pass -o to write another file", out)
			} else if err != nil {
				return fmt.Errorf("could not write the identity: %w", err)
			}
			if _, err := f.WriteString(content); err != nil {
				f.Close()
				return fmt.Errorf("could not write the identity: %w", err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("could not write the identity: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), recipient)
			fmt.Fprintf(cmd.ErrOrStderr(), "The identity is in %s; keep it safe, it is the only key to results sealed to %s.\n", out, recipient)
			return nil
		},
	}
	// This local -o shadows the global output format for this command
	// only, so that it reads like age-keygen.
	gen.Flags().StringVarP(&out, "output", "o", "", "write the identity to this new file (default <config dir>/"+identityFileName+")")
	cmd := groupCommand(&cobra.Command{
		Use:   "keys",
		Short: "Keys for receiving sealed results",
	})
	cmd.AddCommand(gen)
	return cmd
}

// metaFlags are the flags that describe a catalog entry.
type metaFlags struct {
	name, description, visibility string
	share                         []string
}

func (f *metaFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&f.name, "name", "", "the "+what+"'s name")
	cmd.Flags().StringVar(&f.description, "description", "", "what it is")
	cmd.Flags().StringVar(&f.visibility, "visibility", "", "public, private or restricted (default private, or restricted with --share)")
	cmd.Flags().StringSliceVar(&f.share, "share", nil, "share with this workspace ID; repeat for several (implies --visibility restricted)")
}

// sharing returns the visibility and shares the flags ask for.
func (f *metaFlags) sharing() (catalog.Visibility, []string) {
	v := catalog.Visibility(f.visibility)
	if v == "" && len(f.share) > 0 {
		v = catalog.Restricted
	}
	return v, f.share
}

// update returns the changes the flags ask for, only those given.
func (f *metaFlags) update(cmd *cobra.Command) (name, description *string, v *catalog.Visibility, shared *[]string) {
	fl := cmd.Flags()
	if fl.Changed("name") {
		name = &f.name
	}
	if fl.Changed("description") {
		description = &f.description
	}
	vis, sh := f.sharing()
	if fl.Changed("visibility") || fl.Changed("share") {
		v = &vis
	}
	if fl.Changed("share") {
		shared = &sh
	}
	return name, description, v, shared
}

func (a *app) datasetCommand() *cobra.Command {
	cmd := groupCommand(&cobra.Command{
		Use:     "dataset",
		Aliases: []string{"datasets", "ds"},
		Short:   "Datasets: upload, share and set the rules for computing on them",
	})
	cmd.AddCommand(a.datasetUploadCommand(), a.datasetListCommand(), a.datasetGetCommand(), a.datasetUpdateCommand(), a.datasetPolicyCommand(),
		a.deleteCommand("dataset", func(ctx context.Context, c *sdk.Client, id string) (string, error) {
			d, err := c.GetDataset(ctx, id)
			if err != nil {
				return "", err
			}
			return d.Name, nil
		}, (*sdk.Client).DeleteDataset))
	return cmd
}

func (a *app) datasetUploadCommand() *cobra.Command {
	var meta metaFlags
	cmd := &cobra.Command{
		Use:   "upload WORKSPACE PATH",
		Short: "Upload a file, or a directory as a tar archive, as a new dataset",
		Long: `Upload a file, or a directory, as a new dataset of WORKSPACE.

The content streams to the server as it is read, with a progress bar when
stderr is a terminal; a directory is archived on the fly (regular files and
directories only; a symbolic link is followed only to a file inside it). An
upload that breaks off leaves nothing on the server: run it again.`,
		Args: exactly("WORKSPACE", "PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ws, p := args[0], args[1]
			fi, err := os.Stat(p)
			if err != nil {
				return usagef("cannot read %s: %v", p, errors.Unwrap(err))
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			up := catalog.DatasetUpload{Name: meta.name, Description: meta.description}
			up.Visibility, up.SharedWith = meta.sharing()
			base := filepath.Base(filepath.Clean(p))
			if up.Name == "" {
				up.Name = base
			}
			var d *catalog.Dataset
			if fi.IsDir() {
				up.Format = catalog.FormatTar
				d, err = uploadDir(cmd, p, func(r io.Reader, progress func(int64)) (*catalog.Dataset, error) {
					return c.UploadDataset(cmd.Context(), ws, up, r, -1, progress)
				})
			} else {
				up.Format, up.FileName = catalog.FormatFile, base
				d, err = uploadFile(cmd, p, fi.Size(), func(r io.Reader, progress func(int64)) (*catalog.Dataset, error) {
					return c.UploadDataset(cmd.Context(), ws, up, r, fi.Size(), progress)
				})
			}
			if err != nil {
				return err
			}
			return a.show(cmd, d, func(w io.Writer) {
				fmt.Fprintf(w, "Uploaded dataset %q (%s): %s, %s, sha256 %s.\n", d.Name, d.ID, d.Format, formatSize(d.Size), d.SHA256)
			})
		},
	}
	meta.register(cmd, "dataset")
	return cmd
}

// uploadFile streams the file at p through send.
func uploadFile[T any](cmd *cobra.Command, p string, size int64, send func(io.Reader, func(int64)) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(p)
	if err != nil {
		return zero, usagef("cannot read %s: %v", p, errors.Unwrap(err))
	}
	defer f.Close()
	progress, done := progressBar(cmd, size, filepath.Base(p))
	v, err := send(f, progress)
	done(err == nil)
	return v, err
}

// uploadDir streams the directory p as a tar archive through send. The
// archive is written into a pipe as the upload reads it, so it is never
// whole in memory or on disk.
func uploadDir[T any](cmd *cobra.Command, p string, send func(io.Reader, func(int64)) (T, error)) (T, error) {
	pr, pw := io.Pipe()
	archived := make(chan error, 1)
	go func() {
		err := blob.WriteTar(pw, p)
		pw.CloseWithError(err)
		archived <- err
	}()
	progress, done := progressBar(cmd, -1, filepath.Base(filepath.Clean(p)))
	v, err := send(pr, progress)
	done(err == nil)
	// An upload that ended early stops the archiver too.
	pr.CloseWithError(errUploadEnded)
	if tarErr := <-archived; err != nil && tarErr != nil && !errors.Is(tarErr, errUploadEnded) {
		// The archive failed first (a link out of the directory, a file
		// that changed): that says more than the broken upload.
		return v, tarErr
	}
	return v, err
}

// errUploadEnded stops an archiver whose upload has ended.
var errUploadEnded = errors.New("the upload ended")

// progressBar returns a progress callback drawing a bar on stderr when it
// is a terminal, and a function that ends the bar. Elsewhere, such as in
// scripts and logs, it draws nothing.
func progressBar(cmd *cobra.Command, size int64, what string) (func(int64), func(ok bool)) {
	w := cmd.ErrOrStderr()
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, func(bool) {}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("uploading "+what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	return func(n int64) { _ = bar.Set64(n) }, func(ok bool) {
		if ok {
			_ = bar.Finish()
		} else {
			_ = bar.Exit()
			fmt.Fprintln(w)
		}
	}
}

// formatSize shows a byte count the way people read it.
func formatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "-"
	}
	return strings.Join(ss, ", ")
}

// listFilter are the filter flags of the catalog lists.
type listFilter struct {
	name, workspace, visibility, kind string
}

func (f *listFilter) register(cmd *cobra.Command, kinds bool) {
	cmd.Flags().StringVar(&f.name, "name", "", "only entries whose name contains this, in any case")
	cmd.Flags().StringVar(&f.workspace, "workspace", "", "only entries of this workspace")
	cmd.Flags().StringVar(&f.visibility, "visibility", "", "only public, private or restricted entries")
	if kinds {
		cmd.Flags().StringVar(&f.kind, "kind", "", "only wasm, bin or python algorithms")
	}
}

func (f *listFilter) filter() catalog.Filter {
	return catalog.Filter{Name: f.name, WorkspaceID: f.workspace, Visibility: catalog.Visibility(f.visibility), Kind: f.kind}
}

func (a *app) datasetListCommand() *cobra.Command {
	var lf listFlags
	var f listFilter
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the datasets you may see: your workspaces', public ones, and those shared with your workspaces",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*catalog.Dataset]{
				noun:   "datasets",
				header: []string{"ID", "NAME", "FORMAT", "SIZE", "VISIBILITY", "WORKSPACE", "CREATED"},
				row: func(d *catalog.Dataset) []string {
					return []string{d.ID, d.Name, d.Format, formatSize(d.Size), string(d.Visibility), d.WorkspaceID, formatTime(d.CreatedAt)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*catalog.Dataset, string, error) {
				return c.ListDatasets(ctx, f.filter(), o)
			})
		},
	}
	lf.register(cmd)
	f.register(cmd, false)
	return cmd
}

func (a *app) datasetGetCommand() *cobra.Command {
	return showCommand(a, "get", "Show a dataset with its policy", (*sdk.Client).GetDataset, printDataset)
}

func printDataset(w io.Writer, d *catalog.Dataset) {
	fields(w, "id", d.ID, "name", d.Name, "workspace", d.WorkspaceID, "format", d.Format, "file name", orDash(d.FileName),
		"size", formatSize(d.Size), "sha256", d.SHA256, "visibility", string(d.Visibility), "shared with", orNone(d.SharedWith),
		"description", orDash(d.Description), "created", formatTime(d.CreatedAt), "updated", formatTime(d.UpdatedAt))
	fmt.Fprintln(w, "policy:")
	printPolicy(w, d.Policy)
}

func printPolicy(w io.Writer, p catalog.Policy) {
	maxDuration := "-"
	if p.MaxDurationSeconds > 0 {
		maxDuration = (time.Duration(p.MaxDurationSeconds) * time.Second).String()
	}
	fields(w, "  allowed algorithms", orNone(p.AllowedAlgorithms), "  allowed publishers", orNone(p.AllowedPublishers),
		"  any algorithm", yesNo(p.AllowAnyAlgorithm), "  network", yesNo(p.AllowNetwork), "  required TEE", orDash(string(p.RequiredTEE)),
		"  approval required", yesNo(p.ApprovalRequired), "  max duration", maxDuration,
		"  price per run", strconv.FormatInt(p.PricePerRun, 10), "  price per CPU second", strconv.FormatInt(p.PricePerCPUSecond, 10))
}

func (a *app) datasetUpdateCommand() *cobra.Command {
	var meta metaFlags
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a dataset's name, description or visibility",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var upd catalog.DatasetUpdate
			upd.Name, upd.Description, upd.Visibility, upd.SharedWith = meta.update(cmd)
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			d, err := c.UpdateDataset(cmd.Context(), args[0], upd)
			if err != nil {
				return err
			}
			return a.show(cmd, d, func(w io.Writer) { printDataset(w, d) })
		},
	}
	meta.register(cmd, "dataset")
	return cmd
}

func (a *app) datasetPolicyCommand() *cobra.Command {
	var (
		algorithms, publishers         []string
		anyAlg, network, approval      bool
		tee                            string
		maxDuration                    time.Duration
		pricePerRun, pricePerCPUSecond int64
	)
	cmd := &cobra.Command{
		Use:   "policy ID [flags]",
		Short: "Show a dataset's compute policy, or replace it with the one the flags describe",
		Long: `With no flags, show the dataset's compute policy. With any flag, replace the
whole policy with the one the flags describe: what is not given is not
allowed. A new dataset allows nothing to run until its policy opts
algorithms in, by digest, by publishing workspace, or all of them.`,
		Example: `  cove dataset policy ds_... --allow-algorithm alg_... --require-tee sev-snp --max-duration 10m
  cove dataset policy ds_... --allow-publisher ws_... --approval --price-per-run 100`,
		Args: exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !anyChanged(cmd, policyFlags...) {
				d, err := c.GetDataset(ctx, args[0])
				if err != nil {
					return err
				}
				return a.show(cmd, d.Policy, func(w io.Writer) { printPolicy(w, d.Policy) })
			}
			if maxDuration < 0 {
				return usagef("--max-duration must not be negative")
			}
			p := catalog.Policy{
				AllowedPublishers: publishers, AllowAnyAlgorithm: anyAlg, AllowNetwork: network,
				RequiredTEE: catalog.TEE(tee), ApprovalRequired: approval,
				MaxDurationSeconds: int64((maxDuration + time.Second - 1) / time.Second),
				PricePerRun:        pricePerRun, PricePerCPUSecond: pricePerCPUSecond,
			}
			// An algorithm ID stands for the digest of its content.
			for _, alg := range algorithms {
				if strings.HasPrefix(alg, "alg_") {
					got, err := c.GetAlgorithm(ctx, alg)
					if err != nil {
						return err
					}
					alg = got.SHA256
				}
				p.AllowedAlgorithms = append(p.AllowedAlgorithms, alg)
			}
			d, err := c.SetDatasetPolicy(ctx, args[0], p)
			if err != nil {
				return err
			}
			return a.show(cmd, d, func(w io.Writer) {
				fmt.Fprintf(w, "Set the policy of dataset %s:\n", d.ID)
				printPolicy(w, d.Policy)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&algorithms, "allow-algorithm", nil, "allow the algorithm with this SHA-256 (or this algorithm ID's content); repeat for several")
	fl.StringSliceVar(&publishers, "allow-publisher", nil, "allow the algorithms of this workspace ID; repeat for several")
	fl.BoolVar(&anyAlg, "allow-any", false, "allow any algorithm")
	fl.BoolVar(&network, "allow-network", false, "give runs network access")
	fl.StringVar(&tee, "require-tee", "", "the TEE runs must attest to: none, any, vtpm, sev-snp or tdx")
	fl.BoolVar(&approval, "approval", false, "every computation waits for an approval from this dataset's workspace")
	fl.DurationVar(&maxDuration, "max-duration", 0, "cap each run's duration, such as 10m")
	fl.Int64Var(&pricePerRun, "price-per-run", 0, "price of a run, in micro-credits")
	fl.Int64Var(&pricePerCPUSecond, "price-per-cpu-second", 0, "price of a CPU second, in micro-credits")
	return cmd
}

// policyFlags are the flags of `dataset policy` that describe a policy.
var policyFlags = []string{"allow-algorithm", "allow-publisher", "allow-any", "allow-network", "require-tee", "approval", "max-duration", "price-per-run", "price-per-cpu-second"}

// anyChanged reports whether any of the named flags was given.
func anyChanged(cmd *cobra.Command, names ...string) bool {
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// deleteCommand returns `<noun> delete ID`, which asks to confirm at a
// terminal unless --yes.
func (a *app) deleteCommand(noun string, name func(context.Context, *sdk.Client, string) (string, error), del func(*sdk.Client, context.Context, string) error) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a " + noun + " (admins of its workspace; refused while a computation uses it)",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			id := args[0]
			if !yes {
				n, err := name(cmd.Context(), c, id)
				if err != nil {
					return err
				}
				if err := confirm(cmd, fmt.Sprintf("Delete %s %q (%s)?", noun, n, id), "--yes"); err != nil {
					return err
				}
			}
			if err := del(c, cmd.Context(), id); err != nil {
				return err
			}
			a.done(cmd, "Deleted %s %s.", noun, id)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask to confirm")
	return cmd
}

func (a *app) algorithmCommand() *cobra.Command {
	cmd := groupCommand(&cobra.Command{
		Use:     "algorithm",
		Aliases: []string{"algorithms", "alg"},
		Short:   "Algorithms: WebAssembly modules, binaries and Python scripts",
	})
	cmd.AddCommand(a.algorithmCreateCommand(), a.algorithmListCommand(), a.algorithmGetCommand(), a.algorithmUpdateCommand(),
		a.deleteCommand("algorithm", func(ctx context.Context, c *sdk.Client, id string) (string, error) {
			alg, err := c.GetAlgorithm(ctx, id)
			if err != nil {
				return "", err
			}
			return alg.Name, nil
		}, (*sdk.Client).DeleteAlgorithm))
	return cmd
}

// readCWL reads a CWL file given with --cwl.
func readCWL(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", usagef("--cwl: cannot read %s: %v", p, errors.Unwrap(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, catalog.MaxCWLLen+1))
	if err != nil {
		return "", usagef("--cwl: cannot read %s: %v", p, err)
	}
	if len(b) > catalog.MaxCWLLen {
		return "", usagef("--cwl: %s is larger than %d bytes", p, catalog.MaxCWLLen)
	}
	return string(b), nil
}

// kindOf guesses an algorithm's kind from its file name.
func kindOf(p string) string {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".wasm":
		return catalog.KindWasm
	case ".py":
		return catalog.KindPython
	}
	return ""
}

func (a *app) algorithmCreateCommand() *cobra.Command {
	var (
		meta    metaFlags
		kind    string
		algArgs []string
		cwlFile string
	)
	cmd := &cobra.Command{
		Use:   "create WORKSPACE FILE --kind KIND",
		Short: "Upload a WebAssembly module, binary or Python script as a new algorithm",
		Long: `Upload FILE as a new algorithm of WORKSPACE. --kind is wasm, bin or python; it
defaults to wasm for .wasm files and python for .py files. The server checks
that the content is what the kind says.`,
		Args: exactly("WORKSPACE", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ws, p := args[0], args[1]
			if kind == "" {
				if kind = kindOf(p); kind == "" {
					return usagef("pass --kind wasm, bin or python: %s does not say", filepath.Base(p))
				}
			}
			fi, err := os.Stat(p)
			if err != nil {
				return usagef("cannot read %s: %v", p, errors.Unwrap(err))
			}
			if fi.IsDir() {
				return usagef("%s is a directory; an algorithm is one file", p)
			}
			var cwl string
			if cwlFile != "" {
				if cwl, err = readCWL(cwlFile); err != nil {
					return err
				}
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			up := catalog.AlgorithmUpload{Name: meta.name, Description: meta.description, Kind: kind, FileName: filepath.Base(p), Args: algArgs}
			up.Visibility, up.SharedWith = meta.sharing()
			if up.Name == "" {
				up.Name = up.FileName
			}
			alg, err := uploadFile(cmd, p, fi.Size(), func(r io.Reader, progress func(int64)) (*catalog.Algorithm, error) {
				return c.UploadAlgorithm(cmd.Context(), ws, up, r, fi.Size(), progress)
			})
			if err != nil {
				return err
			}
			if cwl != "" {
				id := alg.ID
				if alg, err = c.UpdateAlgorithm(cmd.Context(), id, catalog.AlgorithmUpdate{CWL: &cwl}); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "Algorithm %s was created, but its CWL was not saved; set it with `cove algorithm update %s --cwl %s`.\n", id, id, cwlFile)
					return err
				}
			}
			return a.show(cmd, alg, func(w io.Writer) {
				fmt.Fprintf(w, "Created algorithm %q (%s): %s, %s, sha256 %s.\n", alg.Name, alg.ID, alg.Kind, formatSize(alg.Size), alg.SHA256)
			})
		},
	}
	meta.register(cmd, "algorithm")
	cmd.Flags().StringVar(&kind, "kind", "", "wasm, bin or python (default: from the file's extension)")
	cmd.Flags().StringArrayVar(&algArgs, "arg", nil, "an argument passed before the computation's own; repeat for several")
	cmd.Flags().StringVar(&cwlFile, "cwl", "", "a CWL file describing the algorithm's inputs and outputs")
	return cmd
}

func (a *app) algorithmListCommand() *cobra.Command {
	var lf listFlags
	var f listFilter
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the algorithms you may see: your workspaces', public ones, and those shared with your workspaces",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*catalog.Algorithm]{
				noun:   "algorithms",
				header: []string{"ID", "NAME", "KIND", "SIZE", "VISIBILITY", "WORKSPACE", "SHA256"},
				row: func(alg *catalog.Algorithm) []string {
					return []string{alg.ID, alg.Name, alg.Kind, formatSize(alg.Size), string(alg.Visibility), alg.WorkspaceID, alg.SHA256[:12]}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*catalog.Algorithm, string, error) {
				return c.ListAlgorithms(ctx, f.filter(), o)
			})
		},
	}
	lf.register(cmd)
	f.register(cmd, true)
	return cmd
}

func printAlgorithm(w io.Writer, alg *catalog.Algorithm) {
	fields(w, "id", alg.ID, "name", alg.Name, "workspace", alg.WorkspaceID, "kind", alg.Kind, "file name", alg.FileName,
		"size", formatSize(alg.Size), "sha256", alg.SHA256, "args", orNone(alg.Args), "visibility", string(alg.Visibility),
		"shared with", orNone(alg.SharedWith), "description", orDash(alg.Description), "cwl", yesNo(alg.CWL != ""),
		"created", formatTime(alg.CreatedAt), "updated", formatTime(alg.UpdatedAt))
}

func (a *app) algorithmGetCommand() *cobra.Command {
	return showCommand(a, "get", "Show an algorithm", (*sdk.Client).GetAlgorithm, printAlgorithm)
}

func (a *app) algorithmUpdateCommand() *cobra.Command {
	var meta metaFlags
	var cwlFile string
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change an algorithm's name, description, visibility or CWL (its content never changes)",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var upd catalog.AlgorithmUpdate
			upd.Name, upd.Description, upd.Visibility, upd.SharedWith = meta.update(cmd)
			if cmd.Flags().Changed("cwl") {
				cwl := ""
				if cwlFile != "" {
					var err error
					if cwl, err = readCWL(cwlFile); err != nil {
						return err
					}
				}
				upd.CWL = &cwl
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			alg, err := c.UpdateAlgorithm(cmd.Context(), args[0], upd)
			if err != nil {
				return err
			}
			return a.show(cmd, alg, func(w io.Writer) { printAlgorithm(w, alg) })
		},
	}
	meta.register(cmd, "algorithm")
	cmd.Flags().StringVar(&cwlFile, "cwl", "", `a CWL file describing the algorithm's inputs and outputs; "" removes it`)
	return cmd
}
