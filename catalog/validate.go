package catalog

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/identity"
)

// Limits of what an entry may hold.
const (
	MaxNameLen        = 100
	MaxDescriptionLen = 10000     // characters
	MaxFileNameLen    = 255       // bytes, as file systems count
	MaxArgs           = 256       // arguments of an algorithm
	MaxArgLen         = 4096      // bytes per argument
	MaxCWLLen         = 256 << 10 // bytes
	MaxSharedWith     = 100       // workspaces an entry is shared with
	MaxPolicyEntries  = 1000      // allowed algorithms, and allowed publishers
)

// DatasetUpload describes a dataset whose content is uploaded with it.
type DatasetUpload struct {
	Name        string
	Description string
	// Format is FormatFile (the default) or FormatTar.
	Format string
	// FileName is the file's name in the sandbox; required for
	// FormatFile, empty for FormatTar.
	FileName string
	// Visibility defaults to Private.
	Visibility Visibility
	// SharedWith lists workspace IDs; only with Restricted, and required
	// with it.
	SharedWith []string
	// SHA256 is the digest the content must have; empty for no check.
	SHA256 string
}

// AlgorithmUpload describes an algorithm whose content is uploaded with it.
type AlgorithmUpload struct {
	Name        string
	Description string
	// Kind is KindWasm, KindBin or KindPython.
	Kind string
	// FileName is the file's name in the sandbox.
	FileName string
	// Args are passed before the computation's own arguments.
	Args       []string
	Visibility Visibility
	SharedWith []string
	SHA256     string
}

// DatasetUpdate changes a dataset; nil fields stay as they are. Changing
// Visibility away from Restricted clears SharedWith; changing it to
// Restricted needs SharedWith.
type DatasetUpdate struct {
	Name        *string     `json:"name,omitempty"`
	Description *string     `json:"description,omitempty"`
	Visibility  *Visibility `json:"visibility,omitempty" jsonschema:"enum=public,enum=private,enum=restricted"`
	SharedWith  *[]string   `json:"shared_with,omitempty" jsonschema:"description=workspace IDs; only with visibility restricted"`
}

// AlgorithmUpdate changes an algorithm; nil fields stay as they are.
type AlgorithmUpdate struct {
	Name        *string     `json:"name,omitempty"`
	Description *string     `json:"description,omitempty"`
	Visibility  *Visibility `json:"visibility,omitempty" jsonschema:"enum=public,enum=private,enum=restricted"`
	SharedWith  *[]string   `json:"shared_with,omitempty" jsonschema:"description=workspace IDs; only with visibility restricted"`
	// CWL is a Common Workflow Language description of the algorithm's
	// inputs and outputs; empty removes it.
	CWL *string `json:"cwl,omitempty"`
}

func invalid(field, msg string, args ...any) *cove.Error {
	m := fmt.Sprintf(msg, args...)
	return cove.Errorf(cove.Invalid, "%s %s", field, m).WithDetails(cove.Detail{Field: field, Message: m})
}

// Validate checks that v is a visibility.
func (v Visibility) Validate() error {
	switch v {
	case Public, Private, Restricted:
		return nil
	}
	return invalid("visibility", "must be public, private or restricted, not %q", string(v))
}

// sharing checks a visibility with the workspaces it shares with and
// returns them sorted without duplicates.
func sharing(v Visibility, shared []string) ([]string, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	if v != Restricted {
		if len(shared) > 0 {
			return nil, invalid("shared_with", "is only for visibility restricted")
		}
		return []string{}, nil
	}
	out := slices.Clone(shared)
	slices.Sort(out)
	out = slices.Compact(out)
	switch {
	case len(out) == 0:
		return nil, invalid("shared_with", "must list at least one workspace when the visibility is restricted")
	case len(out) > MaxSharedWith:
		return nil, invalid("shared_with", "lists more than %d workspaces", MaxSharedWith)
	}
	for _, id := range out {
		if !cove.ValidID("ws", id) {
			return nil, invalid("shared_with", "holds %q, which is not a workspace ID", id)
		}
	}
	return out, nil
}

func validateName(name string) error {
	return identity.ValidateName("name", name, MaxNameLen)
}

// validateText checks free text such as a description: valid UTF-8, and
// no control characters besides line breaks and tabs.
func validateText(field, s string, maxRunes int) error {
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	if utf8.RuneCountInString(s) > maxRunes {
		return invalid(field, "is longer than %d characters", maxRunes)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return (r < 0x20 && r != '\n' && r != '\r' && r != '\t') || r == 0x7f }) {
		return invalid(field, "contains control characters")
	}
	return nil
}

// validateFileName checks a name that becomes a file in the sandbox: one
// path element, so it cannot point anywhere else.
func validateFileName(name string) error {
	switch {
	case name == "":
		return invalid("file_name", "is required")
	case len(name) > MaxFileNameLen:
		return invalid("file_name", "is longer than %d bytes", MaxFileNameLen)
	case name == "." || name == ".." || strings.ContainsAny(name, `/\`):
		return invalid("file_name", "must be a plain file name, without directories")
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return invalid("file_name", "contains control characters")
	}
	return nil
}

func validateArgs(args []string) error {
	if len(args) > MaxArgs {
		return invalid("args", "has more than %d arguments", MaxArgs)
	}
	for _, a := range args {
		if len(a) > MaxArgLen || !utf8.ValidString(a) || strings.ContainsRune(a, 0) {
			return invalid("args", "must be UTF-8 text of at most %d bytes each, without NUL", MaxArgLen)
		}
	}
	return nil
}

func validateCWL(cwl string) error {
	if len(cwl) > MaxCWLLen || !utf8.ValidString(cwl) || strings.ContainsRune(cwl, 0) {
		return invalid("cwl", "must be UTF-8 text of at most %d bytes", MaxCWLLen)
	}
	return nil
}

func validateDigest(field, s string) error {
	if s != "" && !validSHA256(s) {
		return invalid(field, "must be 64 lowercase hexadecimal characters")
	}
	return nil
}

// validSHA256 reports whether s is a digest as the blob store writes them.
func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validate checks an upload's description and fills in defaults.
func (u *DatasetUpload) validate() error {
	if u.Format == "" {
		u.Format = FormatFile
	}
	if u.Visibility == "" {
		u.Visibility = Private
	}
	if err := validateName(u.Name); err != nil {
		return err
	}
	if err := validateText("description", u.Description, MaxDescriptionLen); err != nil {
		return err
	}
	switch u.Format {
	case FormatFile:
		if err := validateFileName(u.FileName); err != nil {
			return err
		}
	case FormatTar:
		if u.FileName != "" {
			return invalid("file_name", "is only for format file; a tar dataset is a directory")
		}
	default:
		return invalid("format", "must be file or tar, not %q", u.Format)
	}
	shared, err := sharing(u.Visibility, u.SharedWith)
	if err != nil {
		return err
	}
	u.SharedWith = shared
	return validateDigest("sha256", u.SHA256)
}

// validate checks an upload's description and fills in defaults.
func (u *AlgorithmUpload) validate() error {
	if u.Visibility == "" {
		u.Visibility = Private
	}
	if err := validateName(u.Name); err != nil {
		return err
	}
	if err := validateText("description", u.Description, MaxDescriptionLen); err != nil {
		return err
	}
	switch u.Kind {
	case KindWasm, KindBin, KindPython:
	default:
		return invalid("kind", "must be wasm, bin or python, not %q", u.Kind)
	}
	if err := validateFileName(u.FileName); err != nil {
		return err
	}
	// A .wasm file of another kind would be run as something it is not.
	if strings.HasSuffix(strings.ToLower(u.FileName), ".wasm") && u.Kind != KindWasm {
		return invalid("kind", "must be wasm for a .wasm file")
	}
	if err := validateArgs(u.Args); err != nil {
		return err
	}
	if u.Args == nil {
		u.Args = []string{}
	}
	shared, err := sharing(u.Visibility, u.SharedWith)
	if err != nil {
		return err
	}
	u.SharedWith = shared
	return validateDigest("sha256", u.SHA256)
}

// teeKinds is the closed list of TEE requirements.
var teeKinds = []TEE{TEENone, TEEAny, TEEVTPM, TEESEVSNP, TEETDX}

// Validate checks a policy and reports every problem at once, one detail
// per field: digests must be 64 lowercase hex characters, publishers
// workspace IDs, the TEE one of the known kinds (empty means none), and
// durations and prices not negative.
func (p Policy) Validate() error {
	var ds []cove.Detail
	bad := func(field, format string, args ...any) {
		ds = append(ds, cove.Detail{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if len(p.AllowedAlgorithms) > MaxPolicyEntries {
		bad("allowed_algorithms", "more than %d digests", MaxPolicyEntries)
	}
	for _, d := range p.AllowedAlgorithms {
		if !validSHA256(d) {
			bad("allowed_algorithms", "%q is not a SHA-256 digest of 64 lowercase hexadecimal characters", d)
			break
		}
	}
	if len(p.AllowedPublishers) > MaxPolicyEntries {
		bad("allowed_publishers", "more than %d workspaces", MaxPolicyEntries)
	}
	for _, w := range p.AllowedPublishers {
		if !cove.ValidID("ws", w) {
			bad("allowed_publishers", "%q is not a workspace ID", w)
			break
		}
	}
	if p.RequiredTEE != "" && !slices.Contains(teeKinds, p.RequiredTEE) {
		bad("required_tee", "must be one of none, any, vtpm, sev-snp, tdx, not %q", string(p.RequiredTEE))
	}
	if p.MaxDurationSeconds < 0 {
		bad("max_duration_seconds", "must not be negative")
	}
	if p.PricePerRun < 0 {
		bad("price_per_run", "must not be negative")
	}
	if p.PricePerCPUSecond < 0 {
		bad("price_per_cpu_second", "must not be negative")
	}
	if len(ds) == 0 {
		return nil
	}
	msg := "the policy is not valid: " + ds[0].Field + " " + ds[0].Message
	if len(ds) > 1 {
		msg += fmt.Sprintf(" (and %d more problems)", len(ds)-1)
	}
	return cove.Errorf(cove.Invalid, "%s", msg).WithDetails(ds...)
}

// normalize returns p with the TEE spelled out, lists never nil, and
// duplicates dropped, keeping the owner's order.
func (p Policy) normalize() Policy {
	if p.RequiredTEE == "" {
		p.RequiredTEE = TEENone
	}
	p.AllowedAlgorithms = dedupe(p.AllowedAlgorithms)
	p.AllowedPublishers = dedupe(p.AllowedPublishers)
	return p
}

func dedupe(s []string) []string {
	out := make([]string, 0, len(s))
	seen := map[string]bool{}
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
