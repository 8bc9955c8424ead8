"""What both halves use: the settings (and their rules, destinations, secrets), the one
runner, the one error type, image references, the registry, host keys and `.env` reading."""
