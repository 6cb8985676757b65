// Command wordcount counts files, lines and words across every dataset
// under /cove/inputs and writes /cove/outputs/wordcount.json with the ten
// most frequent words.
//
// A word is a maximal run of letters and digits, compared in lower case, so
// "The" and "the," count as the same word. A line is a run of bytes ended by
// a newline or by the end of a non-empty file, so a last line without a
// newline still counts. It prints one progress line per file to stdout.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
)

const (
	inputsDir = "/cove/inputs"
	output    = "/cove/outputs/wordcount.json"
	topN      = 10
)

// report is the shape of wordcount.json.
type report struct {
	Files int64       `json:"files"`
	Lines int64       `json:"lines"`
	Words int64       `json:"words"`
	Top   []wordCount `json:"top"`
}

type wordCount struct {
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wordcount:", err)
		os.Exit(1)
	}
}

func run() error {
	var r report
	counts := make(map[string]int64)
	err := filepath.WalkDir(inputsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		lines, words, err := countFile(path, counts)
		if err != nil {
			return err
		}
		r.Files++
		r.Lines += lines
		r.Words += words
		rel, _ := filepath.Rel(inputsDir, path)
		fmt.Printf("wordcount: %s: %d lines, %d words\n", rel, lines, words)
		return nil
	})
	if err != nil {
		return err
	}
	r.Top = top(counts, topN)
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(output, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("wordcount: %d files, %d lines, %d words, %d distinct\n", r.Files, r.Lines, r.Words, len(counts))
	return nil
}

// countFile streams one file rune by rune, so files larger than memory are
// fine and a word split across buffer boundaries is still one word.
func countFile(path string, counts map[string]int64) (lines, words int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()

	br := bufio.NewReaderSize(f, 64<<10)
	var word strings.Builder
	flush := func() {
		if word.Len() > 0 {
			counts[word.String()]++
			words++
			word.Reset()
		}
	}
	var last rune = '\n' // an empty file has no lines
	for {
		c, _, err := br.ReadRune()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
		if c == '\n' {
			lines++
		}
		if unicode.IsLetter(c) || unicode.IsDigit(c) {
			word.WriteRune(unicode.ToLower(c))
		} else {
			flush()
		}
		last = c
	}
	flush()
	if last != '\n' {
		lines++
	}
	return lines, words, nil
}

// top returns the n most frequent words, ties broken alphabetically so the
// output does not depend on map order.
func top(counts map[string]int64, n int) []wordCount {
	all := make([]wordCount, 0, len(counts))
	for w, c := range counts {
		all = append(all, wordCount{Word: w, Count: c})
	}
	slices.SortFunc(all, func(a, b wordCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Word, b.Word)
	})
	return all[:min(n, len(all))]
}
