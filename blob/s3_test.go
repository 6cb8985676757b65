package blob_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	testBucket = "cove-blobs"
	testPrefix = "deploy-a"
)

// s3Server runs an in-memory S3-compatible server on loopback and returns
// a configuration for it. It serves TLS, as production stores do: over
// plain HTTP minio-go signs uploads in aws-chunked encoding, which gofakes3
// does not decode in multipart uploads.
func s3Server(t testing.TB) blob.S3Config {
	t.Helper()
	faker := gofakes3.New(s3mem.New())
	srv := httptest.NewTLSServer(faker.Server())
	t.Cleanup(srv.Close)
	return blob.S3Config{
		Endpoint:  strings.TrimPrefix(srv.URL, "https://"),
		UseTLS:    true,
		Transport: srv.Client().Transport,
		Bucket:    testBucket,
		Region:    "us-east-1",
		AccessKey: "test-access",
		SecretKey: "test-secret",
		Prefix:    testPrefix,
		PartSize:  partSize,
	}
}

func mustS3(t testing.TB, cfg blob.S3Config) *blob.S3 {
	t.Helper()
	s, err := blob.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3(t *testing.T) {
	testStore(t, func(t *testing.T) harness {
		cfg := s3Server(t)
		s := mustS3(t, cfg)
		raw := rawClient(t, cfg)
		return harness{store: s, leftovers: func(t testing.TB) []string {
			return s3Leftovers(t, raw)
		}}
	})
}

// rawClient reaches the test server past the store, to see what the store
// leaves in the bucket.
func rawClient(t testing.TB, cfg blob.S3Config) *minio.Client {
	t.Helper()
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.UseTLS,
		Transport: cfg.Transport,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// s3Leftovers lists every key in the bucket outside the committed objects,
// and every multipart upload left incomplete.
func s3Leftovers(t testing.TB, c *minio.Client) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	for oi := range c.ListObjectsIter(ctx, testBucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if !strings.HasPrefix(oi.Key, testPrefix+"/sha256/") {
			left = append(left, oi.Key)
		}
	}
	core := minio.Core{Client: c}
	res, err := core.ListMultipartUploads(ctx, testBucket, "", "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range res.Uploads {
		left = append(left, "incomplete upload of "+u.Key)
	}
	return left
}

func TestS3CreatesBucketOnce(t *testing.T) {
	cfg := s3Server(t)
	a := mustS3(t, cfg)
	data := []byte("shared by replicas")
	if _, err := a.Put(context.Background(), bytes.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	// A second replica finds the bucket and what the first one stored.
	b := mustS3(t, cfg)
	if got := mustRead(t, b, digest(data)); !bytes.Equal(got, data) {
		t.Fatal("second store reads different content")
	}
}

func TestS3PrefixesSeparateDeployments(t *testing.T) {
	cfgA := s3Server(t)
	cfgB := cfgA
	cfgB.Prefix = "deploy-b/"
	a, b := mustS3(t, cfgA), mustS3(t, cfgB)
	data := []byte("only in a")
	if _, err := a.Put(context.Background(), bytes.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	mustBeMissing(t, b, digest(data))
	if got := walk(t, b); len(got) != 0 {
		t.Fatalf("deployment b walks %+v", got)
	}
}

func TestNewS3Invalid(t *testing.T) {
	for _, cfg := range []blob.S3Config{
		{Bucket: "b"},
		{Endpoint: "127.0.0.1:1"},
		{Endpoint: "127.0.0.1:1", Bucket: "b", PartSize: 1 << 20},
	} {
		if _, err := blob.NewS3(context.Background(), cfg); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("NewS3(%+v) = %v, want invalid", cfg, err)
		}
	}
}

func TestNewS3Unreachable(t *testing.T) {
	srv := httptest.NewServer(nil)
	srv.Close() // nothing listens there any more
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := blob.S3Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: testBucket}
	if _, err := blob.NewS3(ctx, cfg); cove.ErrorCode(err) != cove.Unavailable {
		t.Fatalf("NewS3 = %v, want unavailable", err)
	}
}

// TestS3LeftoversAreVisible guards the suite's "nothing left behind"
// checks: they are only worth something if the test server reports
// incomplete multipart uploads and stray keys.
func TestS3LeftoversAreVisible(t *testing.T) {
	cfg := s3Server(t)
	mustS3(t, cfg)
	raw := rawClient(t, cfg)
	ctx := context.Background()
	core := minio.Core{Client: raw}
	if _, err := core.NewMultipartUpload(ctx, testBucket, testPrefix+"/tmp/x", minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.PutObject(ctx, testBucket, testPrefix+"/tmp/y", strings.NewReader("y"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if left := s3Leftovers(t, raw); len(left) != 2 {
		t.Fatalf("leftovers = %v, want the incomplete upload and the stray key", left)
	}
}
