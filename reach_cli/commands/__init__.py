"""The `reach` command groups, one module each; `reach_cli.main` puts them together."""
