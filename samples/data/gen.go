//go:build ignore

// Gen writes people.csv: 200 synthetic people from a fixed seed, so the
// file is the same on every run and describes nobody real. Names are drawn
// from short invented lists; the numbers from plausible distributions.
//
//	go run ./samples/data/gen.go > samples/data/people.csv
package main

import (
	"encoding/csv"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
)

var (
	first = []string{"Ada", "Bram", "Cleo", "Dario", "Edda", "Fenn", "Gala", "Hugo", "Ilse", "Joss",
		"Kaia", "Lars", "Mira", "Nico", "Oona", "Pim", "Quin", "Rhea", "Sven", "Tova"}
	last = []string{"Alder", "Birchwood", "Calloway", "Dunmore", "Elsworth", "Fairhaven", "Greywell",
		"Holloway", "Ivesdale", "Juniper", "Kestrel", "Larkspur", "Moorcroft", "Northam", "Oakridge"}
)

func main() {
	r := rand.New(rand.NewPCG(2024, 11))
	w := csv.NewWriter(os.Stdout)
	w.Write([]string{"name", "age", "height_cm", "income"})
	for i := range 200 {
		name := fmt.Sprintf("%s %s", first[r.IntN(len(first))], last[r.IntN(len(last))])
		age := 18 + r.IntN(62)
		height := 170 + r.NormFloat64()*9
		income := math.Exp(10.6 + r.NormFloat64()*0.45)
		row := []string{name, fmt.Sprint(age), fmt.Sprintf("%.1f", height), fmt.Sprintf("%.0f", income)}
		if i%37 == 36 {
			row[3] = "" // a few unknown incomes: stats skip empty cells
		}
		w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
