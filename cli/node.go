package cli

import "github.com/spf13/cobra"

// addNodeCommands adds the node commands.
func (a *app) addNodeCommands(root *cobra.Command) {}
