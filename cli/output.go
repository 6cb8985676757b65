package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/sdk"
)

func (a *app) json() bool { return a.output == outputJSON }

// printJSON writes v indented, as the API sent it.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// show prints v as JSON with -o json, else calls text.
func (a *app) show(cmd *cobra.Command, v any, text func(w io.Writer)) error {
	if a.json() {
		return printJSON(cmd.OutOrStdout(), v)
	}
	text(cmd.OutOrStdout())
	return nil
}

// done reports a change that the API answers without a body: a line for
// people; nothing with -o json, where there is no object to print.
func (a *app) done(cmd *cobra.Command, format string, args ...any) {
	if !a.json() {
		fmt.Fprintf(cmd.OutOrStdout(), format+"\n", args...)
	}
}

// fields prints name/value pairs aligned, one per line.
func fields(w io.Writer, pairs ...string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], pairs[i+1])
	}
	_ = tw.Flush()
}

// table prints rows under header, aligned in columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
}

// formatTime shows a time in the local zone to the minute; "-" for none.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func formatTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return formatTime(*t)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// listFlags are the paging flags of every list command.
type listFlags struct {
	limit  int
	cursor string
	all    bool
}

func (f *listFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.limit, "limit", 0, "items per page (default: the server's, 50)")
	cmd.Flags().StringVar(&f.cursor, "cursor", "", "start at this page; printed after a page that has more")
	cmd.Flags().BoolVar(&f.all, "all", false, "fetch every page")
}

// columns describe how a list prints as a table.
type columns[T any] struct {
	noun   string // plural, for "no workspaces found"
	header []string
	row    func(T) []string
}

// list fetches one page, or every page with --all, and prints it: with
// -o json as the API's {items, next_cursor}, else as a table followed, on
// stderr, by how to get the next page.
func list[T any](cmd *cobra.Command, a *app, f *listFlags, cols columns[T], fetch func(context.Context, sdk.ListOptions) ([]T, string, error)) error {
	if f.limit < 0 {
		return usagef("--limit must be positive")
	}
	if f.all && f.cursor != "" {
		return usagef("--all starts at the first page; drop --cursor")
	}
	page := httpapi.List[T]{Items: []T{}}
	if f.all {
		sized := func(ctx context.Context, o sdk.ListOptions) ([]T, string, error) {
			o.Limit = f.limit
			return fetch(ctx, o)
		}
		for it, err := range sdk.All(cmd.Context(), sized) {
			if err != nil {
				return err
			}
			page.Items = append(page.Items, it)
		}
	} else {
		items, next, err := fetch(cmd.Context(), sdk.ListOptions{Limit: f.limit, Cursor: f.cursor})
		if err != nil {
			return err
		}
		page.Items, page.NextCursor = append(page.Items, items...), next
	}
	if a.json() {
		return printJSON(cmd.OutOrStdout(), page)
	}
	if len(page.Items) == 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "no %s found\n", cols.noun)
		return nil
	}
	rows := make([][]string, len(page.Items))
	for i, it := range page.Items {
		rows[i] = cols.row(it)
	}
	table(cmd.OutOrStdout(), cols.header, rows)
	if page.NextCursor != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "more %s: pass --all for all of them, or for the next page --cursor %s\n", cols.noun, page.NextCursor)
	}
	return nil
}

// showCommand returns a command "USE ID" that fetches one object and shows
// it: as JSON with -o json, else through text.
func showCommand[T any](a *app, use, short string, fetch func(*sdk.Client, context.Context, string) (T, error), text func(io.Writer, T)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			v, err := fetch(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(cmd, v, func(w io.Writer) { text(w, v) })
		},
	}
}
