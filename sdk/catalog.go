package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/httpapi"
)

// UploadDataset streams the content of a new dataset of workspace ws from
// r and returns the dataset. size is the content's length, or -1 when it
// is not known in advance (such as a directory archived on the fly);
// progress, when not nil, is called with the number of bytes sent so far
// as they go. Nothing is buffered: r is read as the server takes it.
//
// When meta.SHA256 is set the server refuses content that hashes to
// anything else (Invalid), and an upload that breaks off leaves nothing
// behind, so a failed upload can simply be started again.
func (c *Client) UploadDataset(ctx context.Context, ws string, meta catalog.DatasetUpload, r io.Reader, size int64, progress func(n int64)) (*catalog.Dataset, error) {
	q := url.Values{}
	setNonEmpty(q, "name", meta.Name)
	setNonEmpty(q, "description", meta.Description)
	setNonEmpty(q, "format", meta.Format)
	setNonEmpty(q, "file_name", meta.FileName)
	setNonEmpty(q, "visibility", string(meta.Visibility))
	q["shared_with"] = meta.SharedWith
	var d catalog.Dataset
	if err := c.upload(ctx, path("workspaces", ws, "datasets"), q, meta.SHA256, r, size, progress, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// UploadAlgorithm streams the content of a new algorithm of workspace ws
// from r, as UploadDataset does. Content that is not what meta.Kind says
// (a WebAssembly module, UTF-8 text for Python, at least one byte for a
// binary) is Invalid.
func (c *Client) UploadAlgorithm(ctx context.Context, ws string, meta catalog.AlgorithmUpload, r io.Reader, size int64, progress func(n int64)) (*catalog.Algorithm, error) {
	q := url.Values{}
	setNonEmpty(q, "name", meta.Name)
	setNonEmpty(q, "description", meta.Description)
	setNonEmpty(q, "kind", meta.Kind)
	setNonEmpty(q, "file_name", meta.FileName)
	setNonEmpty(q, "visibility", string(meta.Visibility))
	q["args"] = meta.Args
	q["shared_with"] = meta.SharedWith
	var a catalog.Algorithm
	if err := c.upload(ctx, path("workspaces", ws, "algorithms"), q, meta.SHA256, r, size, progress, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// GetDataset returns a dataset; one the caller may not see is NotFound.
func (c *Client) GetDataset(ctx context.Context, id string) (*catalog.Dataset, error) {
	return one[catalog.Dataset](ctx, c, http.MethodGet, path("datasets", id), nil)
}

// ListDatasets returns a page of the datasets the caller may see that
// match f, and the next cursor.
func (c *Client) ListDatasets(ctx context.Context, f catalog.Filter, opts ListOptions) ([]*catalog.Dataset, string, error) {
	return page[*catalog.Dataset](ctx, c, path("datasets"), filterQuery(opts, f))
}

// UpdateDataset changes a dataset's name, description or visibility;
// fields left nil stay as they are.
func (c *Client) UpdateDataset(ctx context.Context, id string, upd catalog.DatasetUpdate) (*catalog.Dataset, error) {
	return one[catalog.Dataset](ctx, c, http.MethodPatch, path("datasets", id), upd)
}

// SetDatasetPolicy replaces a dataset's compute policy. An invalid policy
// is Invalid with one detail per problem.
func (c *Client) SetDatasetPolicy(ctx context.Context, id string, p catalog.Policy) (*catalog.Dataset, error) {
	return one[catalog.Dataset](ctx, c, http.MethodPut, path("datasets", id, "policy"), p)
}

// DeleteDataset deletes a dataset; admins of its workspace only, and
// Conflict while a computation uses it.
func (c *Client) DeleteDataset(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, path("datasets", id), nil, nil, nil)
}

// GetAlgorithm returns an algorithm; one the caller may not see is
// NotFound.
func (c *Client) GetAlgorithm(ctx context.Context, id string) (*catalog.Algorithm, error) {
	return one[catalog.Algorithm](ctx, c, http.MethodGet, path("algorithms", id), nil)
}

// ListAlgorithms returns a page of the algorithms the caller may see that
// match f, and the next cursor.
func (c *Client) ListAlgorithms(ctx context.Context, f catalog.Filter, opts ListOptions) ([]*catalog.Algorithm, string, error) {
	return page[*catalog.Algorithm](ctx, c, path("algorithms"), filterQuery(opts, f))
}

// UpdateAlgorithm changes an algorithm's name, description, visibility or
// CWL; fields left nil stay as they are.
func (c *Client) UpdateAlgorithm(ctx context.Context, id string, upd catalog.AlgorithmUpdate) (*catalog.Algorithm, error) {
	return one[catalog.Algorithm](ctx, c, http.MethodPatch, path("algorithms", id), upd)
}

// DeleteAlgorithm deletes an algorithm; admins of its workspace only, and
// Conflict while a computation uses it.
func (c *Client) DeleteAlgorithm(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, path("algorithms", id), nil, nil, nil)
}

func setNonEmpty(q url.Values, key, value string) {
	if value != "" {
		q.Set(key, value)
	}
}

func filterQuery(opts ListOptions, f catalog.Filter) url.Values {
	q := opts.query()
	setNonEmpty(q, "name", f.Name)
	setNonEmpty(q, "workspace", f.WorkspaceID)
	setNonEmpty(q, "visibility", string(f.Visibility))
	setNonEmpty(q, "kind", f.Kind)
	return q
}

// sentReader counts what the transport has taken of an upload.
type sentReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (s *sentReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.n += int64(n)
		if s.progress != nil {
			s.progress(s.n)
		}
	}
	return n, err
}

// upload POSTs r as a streamed body and decodes the answer into out. An
// expired access token is renewed and the upload sent again only when not
// a byte of it has gone yet: with "Expect: 100-continue" the server
// refuses the credential before the body is sent.
func (c *Client) upload(ctx context.Context, route string, q url.Values, sum string, r io.Reader, size int64, progress func(int64), out any) error {
	body := &sentReader{r: r, progress: progress}
	token := c.token()
	err := c.sendUpload(ctx, route, q, sum, body, size, token, out)
	if !isUnauthorized(err) || !c.canRefresh() || body.n > 0 {
		return err
	}
	if token, err = c.refreshAfter(ctx, token); err != nil {
		return err
	}
	return c.sendUpload(ctx, route, q, sum, body, size, token, out)
}

func (c *Client) sendUpload(ctx context.Context, route string, q url.Values, sum string, body *sentReader, size int64, token string, out any) error {
	u := c.base + route
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader = body
	if size == 0 {
		rd = http.NoBody
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, rd)
	if err != nil {
		return cove.Wrap(err, "could not build the request")
	}
	if size > 0 {
		req.ContentLength = size
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if sum != "" {
		req.Header.Set(httpapi.ContentSHA256Header, sum)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// An upload takes as long as it takes; ctx bounds it, not the
	// client's timeout for ordinary calls.
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return &cove.Error{Code: cove.Unavailable, Message: "the upload was canceled or timed out", Err: err}
		}
		return &cove.Error{Code: cove.Unavailable, Message: fmt.Sprintf("the upload to %s broke off; send it again", c.base), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.decodeError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return &cove.Error{Code: cove.Internal, Message: fmt.Sprintf("the server at %s answered the upload with something other than Cove's JSON; check --server", c.base), Err: err}
	}
	return nil
}
