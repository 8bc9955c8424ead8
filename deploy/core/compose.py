"""The app's compose file as the checks, the scratch database and `fab setup` read it."""

from __future__ import annotations

from pathlib import Path

import yaml

from deploy.core.errors import DeployError


def read_compose(path: Path) -> str:
    """The compose file's text, after making sure it parses as YAML."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DeployError(
            f"no compose file at {path}", "create it, or set `compose_file` in deploy.toml"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise DeployError(f"{path.name} does not parse as YAML{where}", f"fix {path}") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise DeployError(f"{path.name} has no `services:` mapping", f"fix {path}")
    return text
