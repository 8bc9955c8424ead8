"""What both halves use: the settings (their rules, deploy.toml, destinations), the one runner,
the one error type, image references, the registry, host keys, the compose file and `.env`
reading. Imports nothing of the other folders but `commands/`."""
