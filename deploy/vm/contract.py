"""Pure parts of what the VM's compose sees: env files written so compose reads every value
byte for byte, and the checks on the rendered compose file (`docker compose config`)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path, PurePosixPath

import yaml
from dotenv.parser import parse_stream

from deploy.core.errors import DeployError

MOVING_TAGS = frozenset({"latest"})


def refuse_moving_tag(tag: str) -> str:
    """`latest` names whatever was pushed last: a release must name one image for good."""
    if tag in MOVING_TAGS:
        raise DeployError(
            f"{tag!r} is a tag every push moves: the release would not say which image runs, "
            "and a rollback to it could bring back another one",
            "deploy the version tag `inv push` printed (e.g. the commit's short SHA)",
        )
    return tag


def env_line(key: str, value: str, kind: str = "v2") -> str:
    """KEY=value such that compose's env-file parser gives back exactly `value`.

    Compose v2 takes single-quoted values literally ($, #, spaces, =, double quotes); a value
    with a single quote, a newline or a carriage return goes in double quotes with \\ " $ \\n
    and \\r escaped.
    Compose v1 expands ${X} even in single quotes, so such values are refused there.
    """
    if kind == "v1":
        if "${" in value or "'" in value or "\n" in value or "\r" in value:
            raise DeployError(
                f"the value of {key} cannot reach the app unchanged through docker-compose v1 "
                "(it expands ${...} and cannot quote ' or newlines in env files)",
                "install Docker Compose v2 on the VM (compose_command = \"v2\"), or change "
                "the value",
            )
        return f"{key}='{value}'\n"
    if not set(value) & {"'", "\n", "\r"}:
        return f"{key}='{value}'\n"
    escaped = "".join(DOUBLE_QUOTED.get(char, char) for char in value)
    return f'{key}="{escaped}"\n'


# How a character is written in double quotes (compose's env-file parser reads them back).
DOUBLE_QUOTED = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r"}
UNESCAPED = {"\\": "\\", '"': '"', "$": "$", "n": "\n", "r": "\r"}


def parse_env_line(line: str) -> tuple[str, str]:
    """(key, value) of one line as env_line writes it (its inverse); another form (written by
    hand) as python-dotenv reads it."""
    key, _, raw = line.rstrip("\n").partition("=")
    key = re.sub(r"^export\s+", "", key.strip()).strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return key, raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        out, chars = [], iter(raw[1:-1])
        for char in chars:
            if char == "\\":
                nxt = next(chars, "")
                out.append(UNESCAPED.get(nxt, "\\" + nxt))
            else:
                out.append(char)
        return key, "".join(out)

    for binding in parse_stream(io.StringIO(line)):
        if binding.key is not None:
            return binding.key, binding.value or ""
    return key, raw


def env_text(values: dict[str, str], kind: str = "v2") -> str:
    return "".join(env_line(k, v, kind) for k, v in values.items())


def release_override(service: str, ref: str) -> str:
    """A compose override file that sets the service's image to the release (if any)."""
    if not ref:
        return "services: {}\n"
    return f"services:\n  {service}:\n    image: {json.dumps(ref)}\n"


def services_reading_dotenv(compose_path: Path) -> list[str]:
    """Services whose `env_file` is the compose directory's `.env` (compose's own file)."""
    try:
        data = yaml.safe_load(compose_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    found = []
    for name, service in (data.get("services") or {}).items():
        files = (service or {}).get("env_file") or []
        for item in [files] if isinstance(files, str | dict) else files:
            path = item.get("path", "") if isinstance(item, dict) else str(item)
            if PurePosixPath(path) == PurePosixPath(".env"):
                found.append(name)
    return found


def parse_config(raw: str) -> dict:
    """The rendered compose file (`config --format json` of v2, YAML of v1)."""
    raw = raw.strip()
    try:
        return json.loads(raw) if raw.startswith("{") else (yaml.safe_load(raw) or {})
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DeployError(f"cannot read `docker compose config`: {exc}",
                          "run `docker compose config` on the VM to see why") from None


def check_image(config: dict, service: str, wanted: str, variables: dict[str, str]) -> None:
    """Refuse unless `service` of the rendered compose file runs exactly `wanted`."""
    services = config.get("services") or {}
    given = " ".join(f"{k}={v}" for k, v in variables.items())
    if service not in services:
        raise DeployError(
            f"the compose file on the VM has no service {service!r} "
            f"(it has: {', '.join(services) or 'none'})",
            "set service in deploy.toml to the app's service, then `fab setup`",
        )
    image = services[service].get("image", "")
    if image != wanted:
        names = list(variables)
        raise DeployError(
            f"with {given} the compose file runs {image or 'no image'!r} for service "
            f"{service!r}, not the release {wanted}: nothing was changed",
            f"write `image: \"${{{names[0]}}}:${{{names[1]}}}\"` for {service} in the compose "
            "file (or set image_variable/tag_variable to the variables it uses), then "
            "`fab setup`",
        )


def sqlite_mount_problem(config: dict, service: str, app_dir: str, sqlite_path: str) -> str:
    """Why the SQLite file the backups copy is not the app's database ('' if it is): the
    service keeps its data in a named volume, which a copy of app_dir/sqlite_path never sees."""
    mounts = (config.get("services") or {}).get(service, {}).get("volumes") or []
    host_file = PurePosixPath(app_dir) / sqlite_path
    named = []
    for mount in mounts:
        if not isinstance(mount, dict):
            continue
        source = PurePosixPath(str(mount.get("source", "")))
        if mount.get("type") == "bind" and (host_file == source or source in host_file.parents):
            return ""
        if mount.get("type") == "volume":
            named.append(f"{mount.get('source') or '(anonymous)'} on {mount.get('target')}")
    if not named:
        return ""
    return (f"sqlite_path {sqlite_path} is not on the VM's disk under {app_dir}: service "
            f"{service} keeps its data in the named volume {', '.join(named)}, so a backup "
            "would copy nothing")


SQLITE_VOLUME_FIX = ("mount a directory of the app instead (volumes: [\"./data:/data\"]) and "
                     "set sqlite_path to the database file in it, or set database = \"none\" "
                     "to deploy without backups")
