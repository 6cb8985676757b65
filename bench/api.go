package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// api measures authenticated GET /api/v1/workspaces (a list: token check,
// the query, JSON) and GET /api/v1/workspaces/{id} (a get, which adds an
// authorization check) from 64 concurrent clients with a personal access
// token, over loopback HTTP.
func api(ctx context.Context, r *runner, _ map[string]bool) ([]Result, error) {
	const sc, clients = "api", 64
	e, err := r.start(ctx, sc, Setup{DatasetBytes: 1 << 10})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	// A handful more workspaces, so the list has something to list.
	for i := range 9 {
		if _, err := e.Client.CreateWorkspace(ctx, fmt.Sprint("bench-", i)); err != nil {
			return nil, err
		}
	}
	n := r.size(20_000, 2_000)
	var out []Result
	for _, c := range []struct{ name, path string }{
		{"list", "/api/v1/workspaces"},
		{"get", "/api/v1/workspaces/" + e.Workspace},
	} {
		r.progress("api: %d × GET %s from %d clients", n, c.path, clients)
		durs, took, err := hammer(ctx, e.Main.URL+c.path, e.Token, e.TLS, n, clients)
		if err != nil {
			return out, err
		}
		slices.Sort(durs)
		out = append(out,
			figure(sc, c.name+" p50, 64 clients", ms(Percentile(durs, 50)), "ms"),
			figure(sc, c.name+" p99, 64 clients", ms(Percentile(durs, 99)), "ms"),
			figure(sc, c.name+" requests/s, 64 clients", float64(n)/took.Seconds(), "req/s"))
	}
	return out, nil
}

// hammer sends n authenticated GETs to url from clients goroutines and
// returns each request's duration and the wall time.
func hammer(ctx context.Context, url, token string, trust *tls.Config, n, clients int) ([]time.Duration, time.Duration, error) {
	hc := pooledClient(trust)
	durs := make([]time.Duration, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := get(ctx, hc, url, token)
				durs[i] = time.Since(t0)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return durs, time.Since(start), firstErr
}

func get(ctx context.Context, hc *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, res.StatusCode)
	}
	return nil
}
