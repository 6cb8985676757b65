package cli

import "github.com/spf13/cobra"

// addCatalogCommands adds the keys, dataset and algorithm commands.
func (a *app) addCatalogCommands(root *cobra.Command) {}
