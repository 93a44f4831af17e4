"""What makes a run survive: the manifest and its commit, the ledger and lease of incremental runs, budgets."""
