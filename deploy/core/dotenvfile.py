"""Read `.env` files strictly: python-dotenv only logs a warning on a bad line; we stop."""

from __future__ import annotations

import io
from pathlib import Path

from dotenv.parser import parse_stream

from deploy.core.errors import DeployError


def read_env_file(path: Path) -> dict[str, str]:
    """The keys and values of a dotenv file; a line that does not parse is an error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DeployError(f"cannot read {path}: {exc.strerror}", "check its permissions") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.strip()
            raise DeployError(
                f"{path.name} line {binding.original.line} does not parse: {line[:60]!r}",
                f"write it as KEY=value (quote values with spaces) in {path}",
            )
        if binding.key is not None:
            values[binding.key] = binding.value or ""
    return values


def dotenv_keys(path: Path) -> list[str]:
    """The keys of a dotenv file, in order."""
    return list(read_env_file(path))

