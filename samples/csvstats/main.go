// Command csvstats computes, for every CSV file under /cove/inputs, the
// count, min, max, mean and sample standard deviation of each numeric
// column, writes them to /cove/outputs/stats.json and prints a summary.
//
// The first row of a file is its header. A column is numeric when every
// non-empty cell is a plain decimal number (sign, digits, fraction,
// exponent; no NaN, Inf or underscores); empty cells are skipped. The mean
// and deviation use Welford's method in file order, which samples/python/
// stats.py repeats step for step so both produce the same numbers.
package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

const (
	inputsDir = "/cove/inputs"
	output    = "/cove/outputs/stats.json"
)

// number is what stats.py accepts too; strconv and Python's float alone
// disagree on inputs such as "1_000" and "infinity".
var number = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)

type report struct {
	Files []fileStats `json:"files"`
}

type fileStats struct {
	Path    string        `json:"path"` // relative to /cove/inputs
	Rows    int64         `json:"rows"`
	Columns []columnStats `json:"columns"`
}

type columnStats struct {
	Name   string  `json:"name"`
	Count  int64   `json:"count"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
	Stddev float64 `json:"stddev"`
}

// column accumulates one column in a single pass.
type column struct {
	name       string
	nonNumeric bool
	n          int64
	min, max   float64
	mean, m2   float64
}

func (c *column) add(cell string) {
	cell = strings.TrimSpace(cell)
	if cell == "" || c.nonNumeric {
		return
	}
	x, err := strconv.ParseFloat(cell, 64)
	if !number.MatchString(cell) || err != nil || math.IsInf(x, 0) {
		c.nonNumeric = true
		return
	}
	if c.n == 0 || x < c.min {
		c.min = x
	}
	if c.n == 0 || x > c.max {
		c.max = x
	}
	c.n++
	delta := x - c.mean
	c.mean += delta / float64(c.n)
	c.m2 += delta * (x - c.mean)
}

func (c *column) stats() columnStats {
	s := columnStats{Name: c.name, Count: c.n, Min: c.min, Max: c.max, Mean: c.mean}
	if c.n > 1 {
		s.Stddev = math.Sqrt(c.m2 / float64(c.n-1))
	}
	return s
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "csvstats:", err)
		os.Exit(1)
	}
}

func run() error {
	r := report{Files: []fileStats{}}
	err := filepath.WalkDir(inputsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || !strings.EqualFold(filepath.Ext(path), ".csv") {
			return err
		}
		rel, _ := filepath.Rel(inputsDir, path)
		st, err := statsOf(path)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		st.Path = rel
		r.Files = append(r.Files, st)
		printSummary(st)
		return nil
	})
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(output, append(b, '\n'), 0o644)
}

func statsOf(path string) (fileStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileStats{}, err
	}
	defer f.Close()

	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1 // ragged rows: missing cells count as empty
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return fileStats{Columns: []columnStats{}}, nil
	}
	if err != nil {
		return fileStats{}, err
	}
	cols := make([]*column, len(header))
	for i, name := range header {
		if i == 0 {
			name = strings.TrimPrefix(name, "\ufeff")
		}
		cols[i] = &column{name: name}
	}
	var rows int64
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fileStats{}, err
		}
		rows++
		for i, c := range cols {
			if i < len(rec) {
				c.add(rec[i])
			}
		}
	}
	out := fileStats{Rows: rows, Columns: []columnStats{}}
	for _, c := range cols {
		if !c.nonNumeric && c.n > 0 {
			out.Columns = append(out.Columns, c.stats())
		}
	}
	return out, nil
}

func printSummary(st fileStats) {
	fmt.Printf("csvstats: %s: %d rows, %d numeric columns\n", st.Path, st.Rows, len(st.Columns))
	for _, c := range st.Columns {
		fmt.Printf("  %-12s count=%d min=%g max=%g mean=%.4f stddev=%.4f\n",
			c.Name, c.Count, c.Min, c.Max, c.Mean, c.Stddev)
	}
}
