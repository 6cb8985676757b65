package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove/ca"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/sdk"
)

// caCommand returns `cove ca`: the certificate authority.
func (a *app) caCommand() *cobra.Command {
	cmd := groupCommand(&cobra.Command{
		Use:   "ca",
		Short: "Certificates: issue, renew, revoke, list; the CA chain",
		Long: `Cove runs its own certificate authority. Nodes get their certificates at
enrollment; people get user certificates (client authentication, common
name = their email); platform admins issue any kind: node, agent, user,
server.

Revocation is published by OCSP at <server>/ocsp and by a CRL at
<server>/crl; both URLs are in every certificate.`,
	})
	cmd.AddCommand(a.caChainCommand(), a.caListCommand(), a.caDescribeCommand(), a.caIssueCommand(), a.caRenewCommand(), a.caRevokeCommand())
	return cmd
}

func (a *app) caChainCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "chain",
		Short: "Print the CA chain (intermediate then root, PEM), or write it with --file",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.anonymous()
			if err != nil {
				return err
			}
			chain, err := c.CAChain(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(cmd.OutOrStdout(), chain)
			}
			if out == "" {
				_, err := io.WriteString(cmd.OutOrStdout(), chain.PEM)
				return err
			}
			if err := writeNewFile(out, []byte(chain.PEM), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Wrote the chain to %s; root %s\n", out, chain.RootFingerprint)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "file", "", "write the chain to this new file instead of stdout")
	return cmd
}

func (a *app) caListCommand() *cobra.Command {
	var (
		lf           listFlags
		f            sdk.CertificateFilter
		kind, status string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the certificates you may see: yours, or all for platform admins",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "" && !slices.Contains(ca.Kinds, ca.Kind(kind)) {
				return usagef("--kind must be node, agent, user or server, not %q", kind)
			}
			if status != "" && status != string(ca.Valid) && status != string(ca.Revoked) && status != string(ca.Expired) {
				return usagef("--status must be valid, revoked or expired, not %q", status)
			}
			f.Kind, f.Status = ca.Kind(kind), ca.Status(status)
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*ca.Certificate]{
				noun:   "certificates",
				header: []string{"SERIAL", "KIND", "COMMON NAME", "OWNER", "STATUS", "EXPIRES"},
				row: func(x *ca.Certificate) []string {
					return []string{x.Serial, string(x.Kind), x.CommonName, x.Owner, string(x.Status), formatTime(x.NotAfter)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*ca.Certificate, string, error) {
				return c.ListCertificates(ctx, f, o)
			})
		},
	}
	lf.register(cmd)
	cmd.Flags().StringVar(&kind, "kind", "", "only this kind: node, agent, user or server")
	cmd.Flags().StringVar(&f.Owner, "owner", "", "only this owner's (platform admins)")
	cmd.Flags().StringVar(&status, "status", "", "only valid, revoked or expired certificates")
	return cmd
}

func (a *app) caDescribeCommand() *cobra.Command {
	cmd := showCommand(a, "describe", "Show a certificate by serial number", (*sdk.Client).GetCertificate, describeCertificate)
	cmd.Use = "describe SERIAL"
	cmd.Args = exactly("SERIAL")
	cmd.Aliases = []string{"get"}
	return cmd
}

func describeCertificate(w io.Writer, c *ca.Certificate) {
	revoked := "-"
	if c.RevokedAt != nil {
		revoked = formatTimePtr(c.RevokedAt) + " (" + c.RevocationReason + ")"
	}
	fields(w,
		"serial", c.Serial,
		"kind", string(c.Kind),
		"common name", c.CommonName,
		"dns names", orDash(strings.Join(c.DNSNames, ", ")),
		"ip addresses", orDash(strings.Join(c.IPAddresses, ", ")),
		"owner", c.Owner,
		"status", string(c.Status),
		"valid", formatTime(c.NotBefore)+" to "+formatTime(c.NotAfter),
		"revoked", revoked,
		"renewed from", orDash(c.RenewedFrom),
		"fingerprint", c.Fingerprint,
	)
}

// certFiles are where issue and renew write what they get.
type certFiles struct{ prefix string }

func (f *certFiles) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.prefix, "out", "", "write PREFIX.crt, PREFIX.key (when the server made the key) and PREFIX-chain.pem (default: the serial number)")
}

// check refuses, before anything is issued, a prefix whose files exist:
// a certificate issued but not written would be wasted, its key lost.
func (f *certFiles) check() error {
	if f.prefix == "" {
		return nil
	}
	for _, suffix := range []string{".crt", ".key", "-chain.pem"} {
		if _, err := os.Stat(f.prefix + suffix); err == nil {
			return usagef("%s exists already; pass --out with another prefix", f.prefix+suffix)
		}
	}
	return nil
}

// write writes the certificate, key and chain to new files, the key
// readable by its owner only, and reports them.
func (f *certFiles) write(cmd *cobra.Command, a *app, verb string, iss *ca.Issued) error {
	prefix := f.prefix
	if prefix == "" {
		prefix = iss.Certificate.Serial
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{{prefix + ".crt", iss.CertPEM, 0o644}, {prefix + "-chain.pem", iss.ChainPEM, 0o644}}
	if len(iss.KeyPEM) > 0 {
		files = append(files, struct {
			path string
			data []byte
			mode os.FileMode
		}{prefix + ".key", iss.KeyPEM, 0o600})
	}
	var wrote []string
	for _, file := range files {
		if err := writeNewFile(file.path, file.data, file.mode); err != nil {
			return err
		}
		wrote = append(wrote, file.path)
	}
	c := iss.Certificate
	if a.json() {
		return printJSON(cmd.OutOrStdout(), c)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s certificate %s for %s, valid until %s.\n", verb, c.Kind, c.Serial, c.CommonName, formatTime(c.NotAfter))
	fmt.Fprintf(cmd.ErrOrStderr(), "Wrote %s.\n", strings.Join(wrote, ", "))
	if len(iss.KeyPEM) > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "The private key in %s.key exists nowhere else; keep it safe.\n", prefix)
	}
	return nil
}

// writeNewFile writes a file that must not exist yet: a key or
// certificate is never overwritten by accident.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return usagef("%s exists already; pass --out with another prefix", path)
	} else if err != nil {
		return fmt.Errorf("could not write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("could not write %s: %w", path, err)
	}
	return f.Close()
}

func readCSR(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("cannot read the CSR: %v", err)
	}
	return b, nil
}

func (a *app) caIssueCommand() *cobra.Command {
	var (
		files   certFiles
		in      httpapi.IssueCertificateInput
		kind    string
		csrFile string
		ttl     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue a certificate from a CSR (--csr) or with a new key (--cn, --dns, --ip)",
		Long: `Issue a certificate. With --csr the certificate is for the CSR's key, and
its names are the CSR's unless --cn, --dns or --ip give others. Without
--csr the server generates an ECDSA P-256 key, which is written to
PREFIX.key (mode 0600) and exists nowhere else.

Anyone may issue a user certificate for their own email:
  cove ca issue
Platform admins issue any kind, with any names:
  cove ca issue --kind server --cn api.example.com --dns api.example.com --ip 10.0.0.5`,
		Args: exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "" && !slices.Contains(ca.Kinds, ca.Kind(kind)) {
				return usagef("--kind must be node, agent, user or server, not %q", kind)
			}
			if ttl < 0 {
				return usagef("--ttl must be positive")
			}
			if err := files.check(); err != nil {
				return err
			}
			csrPEM, err := readCSR(csrFile)
			if err != nil {
				return err
			}
			in.Kind, in.CSR = ca.Kind(kind), string(csrPEM)
			if ttl > 0 {
				in.TTL = ttl.String()
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			iss, err := c.IssueCertificate(cmd.Context(), in)
			if err != nil {
				return err
			}
			return files.write(cmd, a, "Issued", iss)
		},
	}
	files.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&kind, "kind", "user", "node, agent, user or server (all but user: platform admins)")
	fl.StringVar(&csrFile, "csr", "", "PEM certificate request file; without it the server makes the key")
	fl.StringVar(&in.CommonName, "cn", "", "common name (default: the CSR's, or your email for a user certificate)")
	fl.StringSliceVar(&in.DNSNames, "dns", nil, "DNS name; repeat or separate with commas")
	fl.StringSliceVar(&in.IPAddresses, "ip", nil, "IP address; repeat or separate with commas")
	fl.DurationVar(&ttl, "ttl", 0, "lifetime, such as 720h (default and maximum: the server's for the kind)")
	fl.StringVar(&in.Owner, "owner", "", "user ID the certificate is for (platform admins; default you)")
	return cmd
}

func (a *app) caRenewCommand() *cobra.Command {
	var (
		files   certFiles
		csrFile string
	)
	cmd := &cobra.Command{
		Use:   "renew SERIAL",
		Short: "Issue a new certificate with the same names for a new key; the old one stays valid until it expires",
		Args:  exactly("SERIAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := files.check(); err != nil {
				return err
			}
			csrPEM, err := readCSR(csrFile)
			if err != nil {
				return err
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			iss, err := c.RenewCertificate(cmd.Context(), args[0], csrPEM)
			if err != nil {
				return err
			}
			return files.write(cmd, a, "Renewed as", iss)
		},
	}
	files.register(cmd)
	cmd.Flags().StringVar(&csrFile, "csr", "", "PEM certificate request for the new key; without it the server makes the key")
	return cmd
}

func (a *app) caRevokeCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL",
		Short: "Revoke a certificate; OCSP and the CRL say so at once",
		Args:  exactly("SERIAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, ok := ca.Reasons[reason]; !ok && reason != "" {
				return usagef("--reason must be one of unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation, privilege_withdrawn; not %q", reason)
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			cert, err := c.RevokeCertificate(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			return a.show(cmd, cert, func(w io.Writer) {
				fmt.Fprintf(w, "Revoked %s certificate %s (%s): %s.\n", cert.Kind, cert.Serial, cert.CommonName, cert.RevocationReason)
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "unspecified", "RFC 5280 reason: unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation, privilege_withdrawn")
	return cmd
}
