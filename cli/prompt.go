package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// terminal returns the file descriptor of stdin when it is a terminal.
func terminal(cmd *cobra.Command) (int, bool) {
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// readLine reads one line from stdin without its line ending.
func readLine(cmd *cobra.Command) (string, error) {
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readPassword gets a password: one line of stdin with --password-stdin,
// else typed at the terminal without echo, twice when confirm is set, so a
// typo does not lock the user out of a new account.
func readPassword(cmd *cobra.Command, fromStdin, confirm bool) (string, error) {
	if fromStdin {
		pw, err := readLine(cmd)
		if err != nil || pw == "" {
			return "", usagef("--password-stdin: no password on stdin; pipe it in, as in `cat pw.txt | cove ... --password-stdin`")
		}
		return pw, nil
	}
	fd, ok := terminal(cmd)
	if !ok {
		return "", usagef("stdin is not a terminal, so the password cannot be typed; pipe it in and pass --password-stdin")
	}
	ask := func(prompt string) (string, error) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("could not read the password: %w", err)
		}
		return string(b), nil
	}
	pw, err := ask("Password: ")
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := ask("Password again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", usagef("the two passwords differ; try again")
		}
	}
	return pw, nil
}

// confirm asks a yes/no question at the terminal. Without a terminal it
// refuses, naming the flag that skips the question, so scripts never hang
// or delete by accident.
func confirm(cmd *cobra.Command, question, skipFlag string) error {
	if _, ok := terminal(cmd); !ok {
		return usagef("stdin is not a terminal, so cannot ask to confirm; pass %s", skipFlag)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	answer, err := readLine(cmd)
	if err != nil {
		return fmt.Errorf("could not read the answer: %w", err)
	}
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		return errCanceled
	}
	return nil
}

// errCanceled is a question answered no.
var errCanceled = errors.New("canceled; nothing was changed")
