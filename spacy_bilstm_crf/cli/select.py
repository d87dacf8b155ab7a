"""The `select` command: choose the pool records to label next."""
