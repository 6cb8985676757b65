// Command hello is the smallest Cove algorithm: it greets, counts the
// datasets it was given and writes one output file. Benchmarks use it to
// measure what a run costs apart from the algorithm's own work.
package main

import (
	"fmt"
	"os"
)

func main() {
	entries, err := os.ReadDir("/cove/inputs")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
	msg := fmt.Sprintf("hello from cove: %d dataset(s)\n", len(entries))
	if err := os.WriteFile("/cove/outputs/hello.txt", []byte(msg), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
	fmt.Print(msg)
}
