package cli

import "github.com/spf13/cobra"

// addComputationCommands adds the computation commands.
func (a *app) addComputationCommands(root *cobra.Command) {}
