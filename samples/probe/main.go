// Command probe misbehaves on request, so driver tests can check what a
// sandbox allows and what it stops: it loops, sleeps, allocates and writes
// without end, prints binary garbage, and tries files it should not reach.
//
// It is written once and built for every driver (GOOS=wasip1 for the wasm
// driver, the host for the process driver), so all drivers face the same
// probe. Each command exits 0 when its operation succeeded and 1 with the
// error on stderr when it failed; 64 means a usage error.
//
//	probe exit N           exit with status N
//	probe loop             spin forever without calling anything
//	probe spin DURATION    burn CPU for DURATION, then exit 0
//	probe sleep DURATION   sleep for DURATION, then exit 0
//	probe alloc            allocate and touch 1 MiB blocks until killed
//	probe fill FILE        append 64 KiB blocks to FILE until a write fails
//	probe garbage          write every byte value, then invalid UTF-8, to stdout
//	probe read FILE        read FILE and print its size
//	probe write FILE       create or truncate FILE and write "probe\n"
//	probe mkdir DIR        create DIR
//	probe remove PATH      remove PATH
//	probe symlink OLD NEW  create the symbolic link NEW pointing at OLD
//	probe ls DIR           print the names in DIR, one a line
//	probe env              print the arguments, then the environment sorted
//	probe clock            print the wall clock in Unix nanoseconds and 16 random bytes in hex
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

const usage = 64

func main() {
	if len(os.Args) < 2 {
		fail(usage, "usage: probe COMMAND [ARG...]")
	}
	cmd, args := os.Args[1], os.Args[2:]
	arg := func(i int) string {
		if i >= len(args) {
			fail(usage, "probe %s: missing argument", cmd)
		}
		return args[i]
	}
	var err error
	switch cmd {
	case "exit":
		n, err := strconv.Atoi(arg(0))
		if err != nil {
			fail(usage, "probe exit: %v", err)
		}
		os.Exit(n)
	case "loop":
		loop()
	case "spin":
		spin(duration(arg(0)))
	case "sleep":
		time.Sleep(duration(arg(0)))
	case "alloc":
		alloc()
	case "fill":
		err = fill(arg(0))
	case "garbage":
		_, err = os.Stdout.Write(garbage())
	case "read":
		var b []byte
		if b, err = os.ReadFile(arg(0)); err == nil {
			fmt.Println(len(b))
		}
	case "write":
		err = os.WriteFile(arg(0), []byte("probe\n"), 0o644)
	case "mkdir":
		err = os.Mkdir(arg(0), 0o755)
	case "remove":
		err = os.Remove(arg(0))
	case "symlink":
		err = os.Symlink(arg(0), arg(1))
	case "ls":
		var entries []os.DirEntry
		if entries, err = os.ReadDir(arg(0)); err == nil {
			for _, e := range entries {
				fmt.Println(e.Name())
			}
		}
	case "env":
		for _, a := range os.Args {
			fmt.Println("arg", a)
		}
		env := os.Environ()
		slices.Sort(env)
		for _, e := range env {
			fmt.Println("env", e)
		}
	case "clock":
		b := make([]byte, 16)
		rand.Read(b)
		fmt.Println(time.Now().UnixNano(), hex.EncodeToString(b))
	default:
		fail(usage, "probe: unknown command %q", cmd)
	}
	if err != nil {
		fail(1, "probe %s: %v", cmd, err)
	}
}

// garbage is what "probe garbage" prints: all 256 byte values four times,
// then bytes that are not UTF-8, so a test sees any re-encoding.
func garbage() []byte {
	var b []byte
	for range 4 {
		for c := range 256 {
			b = append(b, byte(c))
		}
	}
	return append(b, 0xff, 0xfe, 0xc3, 0x28, 0x00, '\r', '\n')
}

//go:noinline
func loop() {
	var n uint64
	for {
		n++
	}
}

func spin(d time.Duration) {
	var n uint64
	for start := time.Now(); time.Since(start) < d; {
		for range 1 << 16 {
			n++
		}
	}
}

// alloc keeps every block reachable and writes to each page, so neither
// the garbage collector nor lazy zero pages hide the growth.
func alloc() {
	var blocks [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		blocks = append(blocks, b)
	}
}

func fill(name string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	var total int64
	for {
		n, err := f.Write(block)
		total += int64(n)
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", total, err)
		}
	}
}

func duration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		fail(usage, "probe: %v", err)
	}
	return d
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(code)
}
