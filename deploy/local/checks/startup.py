"""migrate-at-start: the image (or the compose file) must not run migrations when it starts.

A container that runs `alembic upgrade` at every start breaks rollback: the release brought
back by `fab rollback` starts, runs its (older) Alembic against the newer schema, does not know
the newest revision and exits. The deploy runs `migrate_command` once, with the new image,
before the switch; nothing else should migrate.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.core.settings import Settings
from deploy.local import dockerfile
from deploy.local.checks.result import CheckResult, failed, passed

MIGRATES_RE = re.compile(r"\balembic\b[^\n;&|]*\bupgrade\b")
SCRIPT_SUFFIXES = (".sh", ".bash", ".py")


@dataclass(frozen=True)
class StartMigration:
    """One place a container's start runs migrations."""

    where: str  # "Dockerfile CMD", "compose.yaml service 'app' command", ...
    command: str  # the start command as written
    script: str = ""  # the script (relative to the project root) that migrates, if not inline


def command_text(value: object) -> str:
    """A CMD/ENTRYPOINT (exec or shell form) or a compose command (list or string) as text."""
    if isinstance(value, list):
        return shlex.join(str(v) for v in value)
    text = str(value or "").strip()
    if text.startswith("["):
        try:
            return shlex.join(str(v) for v in json.loads(text))
        except (json.JSONDecodeError, TypeError):
            return text
    return text


def script_candidates(command: str) -> list[str]:
    """Words of a start command that name a script file."""
    words = re.split(r"[\s;&|()\"']+", command)
    return [w for w in words if w.endswith(SCRIPT_SUFFIXES) and not w.startswith("-")]


def find_script(word: str, bases: list[Path], root: Path) -> Path | None:
    """The project file a script path in the image names: its path relative to one of `bases`,
    trying shorter tails of an absolute path (`/app/scripts/prestart.sh` → scripts/...)."""
    parts = [p for p in word.split("/") if p not in ("", ".")]
    for i in range(len(parts)):
        tail = "/".join(parts[i:])
        for base in bases:
            path = base / tail
            if path.is_file() and (path.resolve() == root or root in path.resolve().parents):
                return path
    return None


def migrating(command: str, where: str, bases: list[Path], root: Path) -> StartMigration | None:
    if MIGRATES_RE.search(command):
        return StartMigration(where, command)
    for word in script_candidates(command):
        script = find_script(word, bases, root)
        try:
            text = script.read_text() if script else ""
        except (OSError, UnicodeDecodeError):
            continue
        if script and MIGRATES_RE.search(text):
            return StartMigration(where, command, script.relative_to(root).as_posix())
    return None


def app_services(data: dict, service: str) -> list[str]:
    """The app service and the services that run the same image (a `prestart` service)."""
    services = data.get("services") or {}
    image = str((services.get(service) or {}).get("image", ""))
    return [name for name, svc in services.items() if isinstance(svc, dict) and (
        name == service or (image and str(svc.get("image", "")) == image))]


def start_migrations(settings: Settings) -> list[StartMigration]:
    """Every place the app's container start runs migrations: the Dockerfile's final CMD and
    ENTRYPOINT, the compose file's command/entrypoint of the app's services."""
    root = settings.root.resolve()
    found: list[StartMigration] = []
    df_path = settings.path(settings.dockerfile)
    context = settings.path(settings.context)
    bases = [df_path.parent, context, root]
    if df_path.is_file():
        parsed = dockerfile.parse(df_path)
        for word in ("ENTRYPOINT", "CMD"):
            last = dockerfile.final_instruction(parsed, word)
            if last is not None:
                hit = migrating(command_text(last), f"{settings.dockerfile} {word}", bases, root)
                if hit:
                    found.append(hit)
    compose = settings.path(settings.compose_file)
    try:
        data = yaml.safe_load(compose.read_text()) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    if isinstance(data, dict):
        for name in app_services(data, settings.service):
            svc = data["services"][name]
            for key in ("entrypoint", "command"):
                if svc.get(key):
                    hit = migrating(command_text(svc[key]),
                                    f"{settings.compose_file} service '{name}' {key}",
                                    [*bases, compose.parent], root)
                    if hit:
                        found.append(hit)
    return found


def fix_text(settings: Settings, hits: list[StartMigration]) -> str:
    scripts = sorted({h.script for h in hits if h.script})
    migrate = (f"sh {scripts[0]}" if scripts else "alembic upgrade head")
    removals = "; ".join(
        f"remove {'the call of ' + h.script if h.script else 'the `alembic upgrade`'} from "
        f"the {h.where}" for h in hits)
    return (f"{removals}; let the deploy migrate once before the switch: migrate_command = "
            f"\"{migrate}\" in deploy.toml (now {settings.migrate_command!r}; the path as the "
            "image's working directory sees it)")


def migrate_at_start(settings: Settings) -> CheckResult:
    name = "migrate-at-start"
    hits = start_migrations(settings)
    if not hits:
        return passed(name, "no `alembic upgrade` when the container starts")
    first = hits[0]
    how = f"runs {first.script}, which migrates," if first.script else "runs `alembic upgrade`"
    return failed(
        name,
        f"the {first.where} {how} at every start"
        + (f" (and {len(hits) - 1} more)" if len(hits) > 1 else "")
        + ": a rollback would start the older release against the newer schema, its Alembic "
        "would not know the newest revision and the container would exit",
        fix_text(settings, hits),
    )
