"""deploy.toml itself: its name, the prefix its keys take as environment variables, and
its raw contents. Apart from settings.py so that what settings.py builds on (destinations.py)
reads the file too without importing the settings."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from deploy.core.errors import DeployError

SETTINGS_FILE = "deploy.toml"
ENV_PREFIX = "DEPLOY_"


def read_settings_file(path: Path) -> dict[str, Any]:
    """The raw keys of a deploy.toml (empty when there is none)."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"{path.name} is not valid TOML: {exc}", f"fix {path}") from None
    except OSError as exc:
        raise DeployError(f"cannot read {path}: {exc.strerror}", "check its permissions") from None
    return data
