package httpapi

import (
	"errors"
	"io"
	"slices"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/catalog"
)

// ContentSHA256Header carries the SHA-256 an upload must have, in
// lowercase hex. The upload fails, and nothing is stored, when the content
// hashes to anything else.
const ContentSHA256Header = "X-Content-SHA256"

// catalogUpload reports a request body that breaks off, because the client
// went away or sent less than it announced, as the client's problem
// rather than an internal error.
type catalogUpload struct{ r io.Reader }

func (b catalogUpload) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		var ce *cove.Error
		if errors.As(err, &ce) {
			return n, err
		}
		return n, &cove.Error{Code: cove.Invalid, Message: "the upload broke off before the end of its content; nothing was stored, send it again", Err: err}
	}
	return n, err
}

// MountCatalog adds the routes of datasets and algorithms. Uploads stream:
// the request body is the content, never held in memory, and the metadata
// comes in the query string.
func (s *Server) MountCatalog(svc *catalog.Service) {
	const tag = "catalog"
	// The body of an upload is its content, read by the handler as it
	// streams.
	streamed := opt(func(r *route) { r.rawIn = "application/octet-stream" })
	visibility := query("visibility", "public, private (the default) or restricted")
	sharedWith := query("shared_with", "a workspace ID to share with when restricted; repeat for several")
	filters := []opt{
		paged(),
		query("name", "entries whose name contains this, in any case"),
		query("workspace", "entries of this workspace"),
		query("visibility", "public, private or restricted"),
	}

	handle(s, tag, "POST /api/v1/workspaces/{ws}/datasets", "Upload a dataset (members): the body is its content, streamed; optional header X-Content-SHA256 is the digest it must have",
		func(c *Call, _ Empty) (*catalog.Dataset, error) {
			q := c.R.URL.Query()
			up := catalog.DatasetUpload{
				Name: q.Get("name"), Description: q.Get("description"), Format: q.Get("format"), FileName: q.Get("file_name"),
				Visibility: catalog.Visibility(q.Get("visibility")), SharedWith: q["shared_with"], SHA256: c.R.Header.Get(ContentSHA256Header),
			}
			return svc.CreateDataset(c.Ctx(), c.P, c.Path("ws"), up, catalogUpload{c.R.Body})
		}, status(201), streamed,
		query("name", "the dataset's name"), query("description", "what it holds"),
		query("format", "file (the default): one file; tar: a directory as a tar archive of regular files and directories"),
		query("file_name", "the file's name in the sandbox; required for format file"), visibility, sharedWith)
	handle(s, tag, "GET /api/v1/datasets", "The datasets the caller may see: their workspaces', public ones, and restricted ones shared with their workspaces",
		func(c *Call, _ Empty) (List[*catalog.Dataset], error) {
			page, err := c.Page()
			if err != nil {
				return List[*catalog.Dataset]{}, err
			}
			out, err := svc.ListDatasets(c.Ctx(), c.P, catalogFilter(c), page)
			return list(out, page.Limit, func(d *catalog.Dataset) string { return d.ID }), err
		}, filters...)
	handle(s, tag, "GET /api/v1/datasets/{id}", "One dataset",
		func(c *Call, _ Empty) (*catalog.Dataset, error) { return svc.GetDataset(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "PATCH /api/v1/datasets/{id}", "Change a dataset's name, description or visibility (members of its workspace)",
		func(c *Call, in catalog.DatasetUpdate) (*catalog.Dataset, error) {
			return svc.UpdateDataset(c.Ctx(), c.P, c.Path("id"), in)
		})
	handle(s, tag, "PUT /api/v1/datasets/{id}/policy", "Replace a dataset's compute policy (members of its workspace)",
		func(c *Call, in catalog.Policy) (*catalog.Dataset, error) {
			return svc.SetDatasetPolicy(c.Ctx(), c.P, c.Path("id"), in)
		})
	handle(s, tag, "DELETE /api/v1/datasets/{id}", "Delete a dataset (admins of its workspace; refused while a computation uses it)",
		func(c *Call, _ Empty) (Empty, error) { return Empty{}, svc.DeleteDataset(c.Ctx(), c.P, c.Path("id")) })

	handle(s, tag, "POST /api/v1/workspaces/{ws}/algorithms", "Upload an algorithm (members): the body is its content, streamed; optional header X-Content-SHA256 is the digest it must have",
		func(c *Call, _ Empty) (*catalog.Algorithm, error) {
			q := c.R.URL.Query()
			up := catalog.AlgorithmUpload{
				Name: q.Get("name"), Description: q.Get("description"), Kind: q.Get("kind"), FileName: q.Get("file_name"), Args: q["args"],
				Visibility: catalog.Visibility(q.Get("visibility")), SharedWith: q["shared_with"], SHA256: c.R.Header.Get(ContentSHA256Header),
			}
			return svc.CreateAlgorithm(c.Ctx(), c.P, c.Path("ws"), up, catalogUpload{c.R.Body})
		}, status(201), streamed,
		query("name", "the algorithm's name"), query("description", "what it does"),
		query("kind", "wasm (a WebAssembly module), bin (an executable) or python (a script)"),
		query("file_name", "the file's name in the sandbox"),
		query("args", "an argument passed before the computation's own; repeat for several"), visibility, sharedWith)
	handle(s, tag, "GET /api/v1/algorithms", "The algorithms the caller may see, by the rules of datasets",
		func(c *Call, _ Empty) (List[*catalog.Algorithm], error) {
			page, err := c.Page()
			if err != nil {
				return List[*catalog.Algorithm]{}, err
			}
			out, err := svc.ListAlgorithms(c.Ctx(), c.P, catalogFilter(c), page)
			return list(out, page.Limit, func(a *catalog.Algorithm) string { return a.ID }), err
		}, append(slices.Clip(filters), query("kind", "wasm, bin or python"))...)
	handle(s, tag, "GET /api/v1/algorithms/{id}", "One algorithm",
		func(c *Call, _ Empty) (*catalog.Algorithm, error) {
			return svc.GetAlgorithm(c.Ctx(), c.P, c.Path("id"))
		})
	handle(s, tag, "PATCH /api/v1/algorithms/{id}", "Change an algorithm's name, description, visibility or CWL (members of its workspace); its content never changes",
		func(c *Call, in catalog.AlgorithmUpdate) (*catalog.Algorithm, error) {
			return svc.UpdateAlgorithm(c.Ctx(), c.P, c.Path("id"), in)
		})
	handle(s, tag, "DELETE /api/v1/algorithms/{id}", "Delete an algorithm (admins of its workspace; refused while a computation uses it)",
		func(c *Call, _ Empty) (Empty, error) { return Empty{}, svc.DeleteAlgorithm(c.Ctx(), c.P, c.Path("id")) })
}

// catalogFilter reads the filters of a catalog list.
func catalogFilter(c *Call) catalog.Filter {
	return catalog.Filter{Name: c.Query("name"), WorkspaceID: c.Query("workspace"), Visibility: catalog.Visibility(c.Query("visibility")), Kind: c.Query("kind")}
}
