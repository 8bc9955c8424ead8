"""Pure command builders: each returns an argument list and runs nothing."""
