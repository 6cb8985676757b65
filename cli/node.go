package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sdk"
)

// addNodeCommands adds `cove node`: the registry's admin commands. The
// node daemon itself, `cove node run`, is added to the same group by the
// command that builds the binary.
func (a *app) addNodeCommands(root *cobra.Command) {
	cmd := groupCommand(&cobra.Command{
		Use:     "node",
		Aliases: []string{"nodes"},
		Short:   "Compute nodes: enrollment, approval, draining, removal",
		Long: `Compute nodes run the computations. A node joins in three steps:

  1. An admin creates a one-time enrollment token:
       cove node enroll-token create                  (a platform node; platform admins)
       cove node enroll-token create --workspace WS   (a node only WS's runs use; WS admins)
  2. The node's operator starts the node daemon with it on the node's host:
       cove node run --server URL --token TOKEN
     The node enrolls, receives its ID and a NATS credential limited to its
     own subjects, and heartbeats every 2 seconds.
  3. An admin approves it (cove node approve ID), unless the token was made
     to approve at once (the default; --no-auto-approve to review first).

A node is pending until approved, then active. "cove node drain ID" takes it
out of scheduling while its runs finish, and "cove node approve ID" puts it
back. A node that misses its heartbeats for 15 seconds is lost: every run on
it fails with node_lost (nothing restarts by itself), and it is active again
at its next heartbeat. "cove node remove ID" deletes a node; while it has
active runs that needs --force, which fails them.

Platform admins see and manage every node; workspace admins manage their
workspace's nodes, and its members see them.`,
	})
	cmd.AddCommand(
		a.nodeListCommand(),
		a.nodeDescribeCommand(),
		a.nodeChangeCommand("approve", "Approve an enrolled node, or put a drained node back in service", "Approved", (*sdk.Client).ApproveNode),
		a.nodeChangeCommand("drain", "Place no new runs on a node; the runs it has finish", "Draining", (*sdk.Client).DrainNode),
		a.nodeRemoveCommand(),
		a.enrollTokenCommand(),
	)
	root.AddCommand(cmd)
}

func (a *app) nodeListCommand() *cobra.Command {
	var (
		lf    listFlags
		f     sdk.NodeFilter
		state string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the nodes you may see",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" && !slices.Contains(node.States, node.State(state)) {
				return usagef("--state must be pending, active, draining or lost, not %q", state)
			}
			f.State = node.State(state)
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*node.Node]{
				noun:   "nodes",
				header: []string{"ID", "NAME", "STATE", "ONLINE", "WORKSPACE", "CPUS", "MEMORY", "RESERVED", "DRIVERS", "TEE", "LAST SEEN"},
				row: func(n *node.Node) []string {
					return []string{n.ID, n.Name, string(n.State), yesNo(n.Online), orDash(n.WorkspaceID), nodeCPUs(n.Capacity.CPUs), formatSize(n.Capacity.MemoryBytes),
						nodeReserved(n), strings.Join(n.Drivers, ","), n.TEE, formatTimePtr(n.LastSeenAt)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*node.Node, string, error) {
				return c.ListNodes(ctx, f, o)
			})
		},
	}
	lf.register(cmd)
	cmd.Flags().StringVar(&f.WorkspaceID, "workspace", "", "only this workspace's nodes")
	cmd.Flags().StringVar(&state, "state", "", "only nodes in this state: pending, active, draining or lost")
	return cmd
}

func (a *app) nodeDescribeCommand() *cobra.Command {
	cmd := showCommand(a, "describe", "Show a node: what it offers, its state and what is reserved on it", (*sdk.Client).GetNode, describeNode)
	cmd.Aliases = []string{"get"}
	return cmd
}

func describeNode(w io.Writer, n *node.Node) {
	labels := make([]string, 0, len(n.Labels))
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		labels = append(labels, k+"="+n.Labels[k])
	}
	disk := "-"
	if n.Capacity.DiskBytes > 0 {
		disk = formatSize(n.Capacity.DiskBytes)
	}
	approved := "-"
	if n.ApprovedAt != nil {
		approved = formatTimePtr(n.ApprovedAt) + " by " + orDash(n.ApprovedBy)
	}
	fields(w,
		"id", n.ID,
		"name", n.Name,
		"state", string(n.State),
		"online", yesNo(n.Online),
		"workspace", workspaceOf(n),
		"cpus", nodeCPUs(n.Capacity.CPUs),
		"memory", formatSize(n.Capacity.MemoryBytes),
		"disk", disk,
		"reserved", nodeReserved(n),
		"runs", strconv.Itoa(n.Runs),
		"drivers", strings.Join(n.Drivers, ", "),
		"tee", n.TEE,
		"labels", orDash(strings.Join(labels, ", ")),
		"approved", approved,
		"last seen", formatTimePtr(n.LastSeenAt),
		"lost", formatTimePtr(n.LostAt),
		"enrolled", formatTime(n.CreatedAt)+" with token "+n.EnrollTokenID,
		"credential expires", formatTime(n.CredentialExpiresAt),
	)
}

func (a *app) nodeChangeCommand(verb, short, done string, change func(*sdk.Client, context.Context, string) (*node.Node, error)) *cobra.Command {
	return showCommand(a, verb, short, change, func(w io.Writer, n *node.Node) {
		fmt.Fprintf(w, "%s node %s (%s); it is %s.\n", done, n.Name, n.ID, n.State)
	})
}

func (a *app) nodeRemoveCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a node; with active runs only with --force, which fails them",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			if err := c.RemoveNode(cmd.Context(), args[0], force); err != nil {
				return err
			}
			a.done(cmd, "Removed node %s.", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the node even though runs are active on it; they fail with node_lost")
	return cmd
}

func (a *app) enrollTokenCommand() *cobra.Command {
	var (
		workspace string
		ttl       time.Duration
		noAuto    bool
	)
	createCmd := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time enrollment token; its secret is shown once",
		Long: `Create a one-time enrollment token. Its secret is printed once, on stdout,
and cannot be shown again. Hand it to the node's operator, who starts the
node with:
  cove node run --server URL --ca-fingerprint FP --token TOKEN

Without --workspace the node becomes a platform node, which serves every
workspace (platform admins only). With --workspace it becomes that
workspace's node, which only the workspace's runs use (its admins may).`,
		Args: exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < node.MinEnrollTokenTTL || ttl > node.MaxEnrollTokenTTL {
				return usagef("--ttl must be from %s to %s", node.MinEnrollTokenTTL, node.MaxEnrollTokenTTL)
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			t, err := c.CreateEnrollToken(cmd.Context(), httpapi.EnrollTokenInput{WorkspaceID: workspace, ExpiresIn: ttl.String(), AutoApprove: !noAuto})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(cmd.OutOrStdout(), t)
			}
			// The secret alone on stdout, so that $(cove node enroll-token
			// create) captures it; the explanation on stderr.
			kind := "a platform node"
			if t.WorkspaceID != "" {
				kind = "a node of workspace " + t.WorkspaceID
			}
			approval := "it is approved as soon as it enrolls"
			if !t.AutoApprove {
				approval = "approve it with: cove node approve <node ID>"
			}
			e := cmd.ErrOrStderr()
			fmt.Fprintf(e, "Created enrollment token %s for %s, valid once until %s; %s.\n", t.ID, kind, formatTime(t.ExpiresAt), approval)
			fmt.Fprintln(e, "warning: this is the only time the secret is shown; pass it on now, like a password.")
			// The node trusts the server at enrollment by its CA's
			// fingerprint, which it checks against the chain the server
			// presents: safe to pass along with the command.
			trust := ""
			if ch, err := c.CAChain(cmd.Context()); err == nil && ch.RootFingerprint != "" && strings.HasPrefix(c.BaseURL(), "https://") {
				trust = " --ca-fingerprint " + ch.RootFingerprint
			}
			fmt.Fprintf(e, "On the node's host run: cove node run --server %s%s --token <secret>\n", c.BaseURL(), trust)
			fmt.Fprintln(cmd.OutOrStdout(), t.Token)
			return nil
		},
	}
	createCmd.Flags().StringVar(&workspace, "workspace", "", "make the node this workspace's (default: a platform node)")
	createCmd.Flags().DurationVar(&ttl, "ttl", node.DefaultEnrollTokenTTL, "how long the token may be used, such as 30m or 24h")
	createCmd.Flags().BoolVar(&noAuto, "no-auto-approve", false, "leave the node pending until an admin approves it")

	var (
		lf     listFlags
		listWS string
	)
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List the platform's enrollment tokens, or a workspace's with --workspace",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*node.EnrollToken]{
				noun:   "enrollment tokens",
				header: []string{"ID", "WORKSPACE", "STATE", "AUTO APPROVE", "EXPIRES", "NODE", "CREATED"},
				row: func(t *node.EnrollToken) []string {
					return []string{t.ID, orDash(t.WorkspaceID), enrollTokenState(t), yesNo(t.AutoApprove), formatTime(t.ExpiresAt), orDash(t.NodeID), formatTime(t.CreatedAt)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*node.EnrollToken, string, error) {
				return c.ListEnrollTokens(ctx, listWS, o)
			})
		},
	}
	lf.register(listCmd)
	listCmd.Flags().StringVar(&listWS, "workspace", "", "list this workspace's tokens")

	cmd := groupCommand(&cobra.Command{
		Use:     "enroll-token",
		Aliases: []string{"enroll-tokens"},
		Short:   "One-time tokens that let a node enroll",
	})
	cmd.AddCommand(createCmd, listCmd, &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an unused enrollment token",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			if err := c.RevokeEnrollToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			a.done(cmd, "Revoked enrollment token %s.", args[0])
			return nil
		},
	})
	return cmd
}

func workspaceOf(n *node.Node) string {
	if n.WorkspaceID == "" {
		return "- (a platform node: serves every workspace)"
	}
	return n.WorkspaceID
}

func enrollTokenState(t *node.EnrollToken) string {
	switch {
	case t.UsedAt != nil:
		return "used"
	case t.RevokedAt != nil:
		return "revoked"
	case !time.Now().Before(t.ExpiresAt):
		return "expired"
	default:
		return "unused"
	}
}

func nodeCPUs(n float64) string { return strconv.FormatFloat(n, 'f', -1, 64) }

func nodeReserved(n *node.Node) string {
	if n.Runs == 0 && n.Reserved == (runproto.Resources{}) {
		return "-"
	}
	return nodeCPUs(n.Reserved.CPUs) + " CPU, " + formatSize(n.Reserved.MemoryBytes)
}
