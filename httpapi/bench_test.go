package httpapi_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/covecompute/cove/app/apptest"
)

// BenchmarkAuthenticatedList measures GET /api/v1/workspaces with an access
// token over loopback HTTP: token verification, session lookup, the list
// query and JSON encoding.
func BenchmarkAuthenticatedList(b *testing.B) {
	for _, e := range apptest.Engines() {
		b.Run(e.Name, func(b *testing.B) {
			v := newEnvTB(b, e)
			benchGet(b, v.m.URL+"/api/v1/workspaces", v.tokens["owner"])
		})
	}
}

// BenchmarkAuthorizedGet measures GET /api/v1/workspaces/{id}, which adds an
// OpenFGA check to the list call's work.
func BenchmarkAuthorizedGet(b *testing.B) {
	v := newEnvTB(b, apptest.Engines()[0])
	benchGet(b, v.m.URL+"/api/v1/workspaces/"+v.wsA, v.tokens["viewer"])
}

// benchGet sends authenticated GETs to url from parallel clients.
func benchGet(b *testing.B, url, token string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
}
