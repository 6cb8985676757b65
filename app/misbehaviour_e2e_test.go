package app_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sdk"
)

// TestAlgorithmMisbehaviour runs the probe sample on a real node process,
// misbehaving in every way it knows, and checks that each run ends the way
// the docs promise, with its logs kept and clean.
func TestAlgorithmMisbehaviour(t *testing.T) {
	probe := readFile(t, samplestest.MustBuildWasm(t, "probe"))
	type outcome struct {
		run   *computation.Run
		lines []runproto.LogLine
		raw   []byte // the log stream as sent
	}
	failed := func(t *testing.T, o outcome, reason computation.Reason) {
		t.Helper()
		if o.run.State != computation.Failed || o.run.Reason != reason {
			t.Errorf("run ended %s %s (%s), want failed %s", o.run.State, o.run.Reason, o.run.Message, reason)
		}
		if o.run.Message == "" {
			t.Error("the failure has no message")
		}
	}
	exitCode := func(t *testing.T, o outcome, want int) {
		t.Helper()
		if o.run.ExitCode == nil || *o.run.ExitCode != want {
			t.Errorf("exit code %v, want %d", o.run.ExitCode, want)
		}
	}
	// noSize checks that "probe read" printed no size: it read nothing.
	noSize := func(t *testing.T, o outcome) {
		t.Helper()
		for _, l := range o.lines {
			if _, err := strconv.Atoi(l.Text); err == nil && l.Stream == "stdout" {
				t.Errorf("the probe read a file it must not: %+v", o.lines)
			}
		}
	}
	cases := []struct {
		name   string
		args   []string
		limits computation.Limits
		check  func(*testing.T, outcome)
	}{
		{"exit 3", []string{"exit", "3"}, computation.Limits{}, func(t *testing.T, o outcome) {
			failed(t, o, computation.AlgorithmError)
			exitCode(t, o, 3)
		}},
		{"error on stderr", []string{"read", "/cove/inputs/data/missing.txt"}, computation.Limits{}, func(t *testing.T, o outcome) {
			failed(t, o, computation.AlgorithmError)
			exitCode(t, o, 1)
			if !slices.ContainsFunc(o.lines, func(l runproto.LogLine) bool {
				return l.Stream == "stderr" && strings.Contains(l.Text, "probe read") && strings.Contains(l.Text, "missing.txt")
			}) {
				t.Errorf("the failed run's log lacks the error: %+v", o.lines)
			}
		}},
		{"infinite loop", []string{"loop"}, computation.Limits{MaxDurationSeconds: 2}, func(t *testing.T, o outcome) {
			failed(t, o, computation.Timeout)
			if o.run.StartedAt != nil && o.run.FinishedAt != nil {
				if d := o.run.FinishedAt.Sub(*o.run.StartedAt); d < 2*time.Second || d > 20*time.Second {
					t.Errorf("a 2 s limit stopped the loop after %v", d)
				}
			}
		}},
		{"unbounded allocation", []string{"alloc"}, computation.Limits{MemoryBytes: 64 << 20}, func(t *testing.T, o outcome) {
			failed(t, o, computation.OOM)
		}},
		{"disk filling", []string{"fill", "/cove/outputs/fill.bin"}, computation.Limits{DiskBytes: 1 << 20}, func(t *testing.T, o outcome) {
			failed(t, o, computation.DiskFull)
		}},
		{"binary garbage", []string{"garbage"}, computation.Limits{}, func(t *testing.T, o outcome) {
			if !o.run.State.Terminal() || o.run.State == computation.Failed && (o.run.Reason == "" || o.run.Message == "") {
				t.Errorf("run ended %s %s %q", o.run.State, o.run.Reason, o.run.Message)
			}
			if !utf8.Valid(o.raw) {
				t.Errorf("the log stream is not valid UTF-8: %q", o.raw)
			}
			if len(o.lines) == 0 || !slices.ContainsFunc(o.lines, func(l runproto.LogLine) bool { return strings.ContainsRune(l.Text, utf8.RuneError) }) {
				t.Errorf("the garbage left no replaced bytes in the log: %+v", o.lines)
			}
			for _, l := range o.lines {
				if !utf8.ValidString(l.Text) {
					t.Errorf("line %d is not valid UTF-8: %q", l.Seq, l.Text)
				}
			}
		}},
		{"read /etc/passwd", []string{"read", "/etc/passwd"}, computation.Limits{}, func(t *testing.T, o outcome) {
			failed(t, o, computation.AlgorithmError)
			noSize(t, o)
		}},
		{"read /etc/passwd through the inputs", []string{"read", "/cove/inputs/../../etc/passwd"}, computation.Limits{}, func(t *testing.T, o outcome) {
			failed(t, o, computation.AlgorithmError)
			noSize(t, o)
		}},
		{"read the node's files", []string{"read", "../../node.json"}, computation.Limits{}, func(t *testing.T, o outcome) {
			failed(t, o, computation.AlgorithmError)
			noSize(t, o)
		}},
	}

	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			c := startCluster(t, e, nil)
			c.startNode(t, "sandbox")
			l := newLab(t, c.admin)
			alg := l.algorithm(t, "probe", probe)

			t.Run("not WebAssembly", func(t *testing.T) {
				ctx := context.Background()
				junk := []byte("#!/bin/sh\ncat /etc/passwd\n")
				for _, kind := range []string{catalog.KindWasm, catalog.KindBin} {
					_, err := l.owner.UploadAlgorithm(ctx, l.ws, catalog.AlgorithmUpload{Name: "fake", Kind: kind, FileName: "fake.wasm"},
						bytes.NewReader(junk), int64(len(junk)), nil)
					wantErr(t, "upload of a .wasm file of kind "+kind+" that is not WebAssembly", err, cove.Invalid)
				}
				algs, _, err := l.owner.ListAlgorithms(ctx, catalog.Filter{Name: "fake"}, sdk.ListOptions{})
				if err != nil || len(algs) != 0 {
					t.Errorf("refused uploads left entries: %v %v", algs, err)
				}
				// Nor any bytes: no temporary file, no blob of that content.
				blobs := filepath.Join(c.cfg.DataDir, "blobs")
				if entries, err := os.ReadDir(filepath.Join(blobs, "tmp")); err != nil || len(entries) != 0 {
					t.Errorf("refused uploads left temporary files: %v %v", entries, err)
				}
				sum := sha256.Sum256(junk)
				_ = filepath.WalkDir(blobs, func(path string, d fs.DirEntry, err error) error {
					if err == nil && strings.Contains(path, hex.EncodeToString(sum[:])) {
						t.Errorf("a refused upload was stored as %s", path)
					}
					return nil
				})
			})

			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					_, run := l.run(t, alg, tc.limits, tc.args...)
					end := waitEnd(t, l.owner, run.ID, time.Minute)
					o := outcome{run: end, lines: readLogs(t, l.owner, run.ID), raw: rawLogs(t, c.m.URL, l.owner, run.ID)}
					t.Logf("%v: %s %s exit %v %q, %d log lines", tc.args, end.State, end.Reason, derefInt(end.ExitCode), end.Message, len(o.lines))
					tc.check(t, o)
				})
			}
		})
	}
}

func derefInt(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
