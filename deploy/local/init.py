"""`inv init`: look at an app repo and write a commented deploy.toml, tasks.py and
fabfile/__init__.py that match what is there.

It detects the Dockerfile and its Python, the compose file (its services, how it names the
app's image, its database service), Alembic, the lock kind, the app's development Python, the
variable the app reads its database URL from, and where the tests live. What it cannot know
(the VM, the registry) is left for the user, and said so.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.settings import SETTINGS_FILE, Settings
from deploy.local import apppython, dockerfile, initproxy, lockkinds
from deploy.local.checks.context import copy_sources
from deploy.local.checks.envcomplete import interpolate, parse_image_line
from deploy.local.checks.startup import fix_text, start_migrations
from deploy.local.codevars import app_env_reads
from deploy.local.dockerfile import ImageEnv
from deploy.local.hooks import write_samples

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
APP_SERVICE_NAMES = ("app", "web", "backend", "api", "server")
POSTGRES_IMAGES = ("pgvector", "postgis", "timescaledb", "timescaledb-ha")
TASKS_PY = "from deploy.cli.tasks import ns  # noqa: F401\n"
FABFILE_PY = "from deploy.cli.fabtasks import ns  # noqa: F401\n"


@dataclass
class Found:
    """What `inv init` found: settings to write, notes to show, things left to fill in."""

    values: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    image_env: ImageEnv = field(default_factory=ImageEnv)
    remarks: dict[str, str] = field(default_factory=dict)  # a comment above a key, this app's


def first_existing(root: Path, names: tuple[str, ...], depth: int = 1) -> Path | None:
    """The first of `names` in `root`, else in its subdirectories (one level)."""
    for name in names:
        if (root / name).is_file():
            return root / name
    if depth:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and p.name not in ("node_modules", "venv", "tests")):
            hit = first_existing(sub, names, depth - 1)
            if hit:
                return hit
    return None


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def split_image(image: str) -> tuple[str, str]:
    """`REPO:TAG` split at the tag's colon (not a registry port's)."""
    head, _, last = image.rpartition("/")
    if ":" in last:
        name, _, tag = last.partition(":")
        return (f"{head}/{name}" if head else name), tag
    return image, ""


def is_postgres_image(image: str) -> bool:
    """A literal Postgres image (`postgres:17`, `pgvector/pgvector:pg17`, `postgis/postgis`),
    not an app image that merely has "postgres" in its name or a variable."""
    name = split_image(image)[0].rpartition("/")[2]
    return "$" not in image and (name.startswith("postgres") or name in POSTGRES_IMAGES)


def detect_compose(root: Path, found: Found) -> None:
    path = first_existing(root, COMPOSE_NAMES)
    if not path:
        found.todo.append("no compose file found: write compose.yaml (the app service's image: "
                          "\"${DEPLOY_IMAGE}:${DEPLOY_TAG}\"), then set compose_file")
        return
    found.values["compose_file"] = rel(root, path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        found.todo.append(f"{rel(root, path)} does not parse as YAML: fix it")
        return
    services = data.get("services") or {}
    found.notes.append(f"compose file {rel(root, path)}: services {', '.join(services)}")
    db = next((name for name, svc in services.items() if isinstance(svc, dict)
               and is_postgres_image(str(svc.get("image", "")))), None)
    if db:
        found.values["database"] = "postgres"
        found.values["postgres_service"] = db
        found.notes.append(f"database service '{db}' ({services[db].get('image')}): Postgres")
        env = services[db].get("environment") or {}
        if isinstance(env, list):
            env = dict(str(item).partition("=")[::2] for item in env)
        env_files = services[db].get("env_file") or []
        if ".env" in ([env_files] if isinstance(env_files, str) else env_files) and \
                (path.parent / ".env.example").is_file():  # what .env holds, as documented
            env = {**read_env_file(path.parent / ".env.example"), **env}
        postgres_names(path.parent, env, found)
    app = next((n for n in services if n in APP_SERVICE_NAMES and n != db), None) or next(
        (n for n, s in services.items() if n != db and isinstance(s, dict)
         and ("build" in s or "$" in str(s.get("image", "")))), None)
    if not app:
        found.todo.append("cannot tell which compose service is the app: set `service`")
        return
    found.values["service"] = app
    image = str((services[app] or {}).get("image", ""))
    line = parse_image_line(image)
    if line:
        if (line.repo_variable, line.tag_variable) != ("DEPLOY_IMAGE", "DEPLOY_TAG"):
            found.values["image_variable"] = line.repo_variable
            found.values["tag_variable"] = line.tag_variable
        if line.repo_default:
            found.values["image"] = line.repo_default
        found.notes.append(f"service '{app}' names its image {image}: the deploy sets "
                           f"{line.repo_variable} and {line.tag_variable} on the VM")
    else:
        found.todo.append(
            f"service '{app}' has image {image or '(none)'}: write it as "
            '"${DEPLOY_IMAGE}:${DEPLOY_TAG}" so the deploy can choose the release')
    env_files = (services[app] or {}).get("env_file")
    if env_files:
        found.notes.append(f"service '{app}' reads env_file {env_files}")


PART_SUFFIXES = {"host": ("_SERVER", "_HOST", "_HOSTNAME"), "port": ("_PORT",),
                 "user": ("_USER", "_USERNAME"), "password": ("_PASSWORD", "_PASS"),
                 "name": ("_DB", "_NAME", "_DATABASE", "_DBNAME")}


def database_parts(reads: set[str]) -> dict[str, str]:
    """The variables an app builds its database URL from (POSTGRES_SERVER, POSTGRES_PORT,
    POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB): the prefix with most parts, host and name
    included ({} if none)."""
    by_prefix: dict[str, dict[str, str]] = {}
    for var in sorted(reads):
        for part, suffixes in PART_SUFFIXES.items():
            suffix = next((s for s in suffixes if var.upper().endswith(s)), None)
            if suffix and len(var) > len(suffix):
                by_prefix.setdefault(var[: -len(suffix)], {}).setdefault(part, var)
    candidates = [p for p in by_prefix.values() if {"host", "name", "user"} <= set(p)]
    if not candidates:
        return {}
    best = max(candidates, key=len)
    return {part: best[part] for part in PART_SUFFIXES if part in best}


def postgres_names(compose_dir: Path, env: dict, found: Found) -> None:
    """postgres_user and postgres_db: from the database service's environment (its ${VARS}
    from .env.example, which documents the .env compose reads), else from a database URL in
    .env.example, else the image's defaults (user postgres; the database named as the user)."""
    example_path = compose_dir / ".env.example"
    example = read_env_file(example_path) if example_path.is_file() else {}
    given = {key: interpolate(str(env.get(key) or ""), example)
             for key in ("POSTGRES_USER", "POSTGRES_DB")}
    url = next((urlsplit(v) for k, v in sorted(example.items()) if "DATABASE_URL" in k.upper()
                and v.startswith("postgres")), None)
    user = given["POSTGRES_USER"] or (unquote(url.username) if url and url.username else "")
    name = given["POSTGRES_DB"] or (unquote(url.path.lstrip("/")) if url else "")
    found.values["postgres_user"] = user or "postgres"
    found.values["postgres_db"] = name or user or "postgres"


def detect_dockerfile(root: Path, found: Found) -> None:
    path = first_existing(root, ("Dockerfile",))
    if not path:
        found.todo.append("no Dockerfile found: write one, then set `dockerfile`")
        return
    found.values["dockerfile"] = rel(root, path)
    try:
        python = dockerfile.final_python(dockerfile.parse(path))
        found.notes.append(f"{rel(root, path)}: the image runs Python {python}")
    except DeployError as exc:
        found.todo.append(exc.message)
    try:
        found.image_env = dockerfile.image_env(dockerfile.parse(path))
    except DeployError:  # said above (a Dockerfile without FROM)
        pass
    python_cmd = found.image_env.command("python")
    if python_cmd != "python":  # the app's packages are not on the image's bare `python`
        where = found.image_env.venv or "Poetry's environment"
        found.values["smoke_command"] = python_cmd + Settings.smoke_command.removeprefix("python")
        found.notes.append(f"the image installs the app's packages into {where}, not on its "
                           f"PATH: smoke and migrate run `{python_cmd}`")
    if path.parent != root:  # the context: the Dockerfile's directory, unless it copies
        # files from the repo root (uv.lock)
        sources = [src.removeprefix("./").rstrip("/") for src in copy_sources(
            dockerfile.parse(path))]
        from_root = any(src not in ("", ".") and (root / src).exists()
                        and not (path.parent / src).exists() for src in sources)
        found.values["context"] = "." if from_root else rel(root, path.parent)


def detect_app(root: Path, found: Found) -> None:
    ini = first_existing(root, ("alembic.ini",))
    if ini:
        found.values["alembic_ini"] = rel(root, ini)
        found.notes.append(f"Alembic: {rel(root, ini)}")
    else:
        found.notes.append("no alembic.ini: the migrations check will have nothing to check")
    defaults = Settings(root=root)
    settings = Settings(
        root=root,
        alembic_ini=str(found.values.get("alembic_ini", defaults.alembic_ini)),
        context=str(found.values.get("context", defaults.context)),
        dockerfile=str(found.values.get("dockerfile", defaults.dockerfile)),
    )
    reads = {r.name for r in app_env_reads(root)}
    url_vars = sorted(v for v in reads if "DATABASE_URL" in v.upper() or v.upper() == "DB_URL")
    if url_vars:
        found.values["database_url_env"] = url_vars[0]
        found.notes.append(f"the app reads its database URL from {url_vars[0]}")
    elif found.values.get("database") == "postgres" and database_parts(reads):
        parts = database_parts(reads)
        found.values["database_env"] = parts
        found.notes.append("the app builds its database URL from " + ", ".join(parts.values()))
    elif ini:
        found.todo.append("the app's code reads no *DATABASE_URL variable: set "
                          "`database_url_env` to the one it builds its URL from (the migrations "
                          "check refuses until then)")
    if ini and "database" not in found.values:
        found.values["database"] = "sqlite"
    try:
        lk = lockkinds.detect(settings)
        found.values["lock_kind"] = lk.kind
        found.notes.append(f"dependencies: {lk.kind}" + (
            f" ({rel(root, lk.lock)})" if lk.lock and lk.lock.exists() else " (no lock yet: "
            "run `inv lock`)"))
    except DeployError as exc:
        found.todo.append(exc.message)
    pythons = apppython.dev_pythons(settings)
    spec = apppython.requires_python(settings)
    if pythons or spec:
        found.notes.append("the app's Python: " + ", ".join(
            [f"{w} {v}" for w, v in pythons.items()] + ([f"requires-python {spec}"] if spec
                                                        else [])))
    try:
        found.notes.append(f"the app's code runs (checks, tests) in "
                           f"{apppython.app_python(settings).where}")
    except DeployError as exc:
        found.todo.append(f"{exc.message}: {exc.fix}")
    tests = sorted(p.parent for p in root.glob("*/tests") if p.is_dir()) + (
        [root] if (root / "tests").is_dir() else [])
    if tests:
        found.values["test_dir"] = rel(root, tests[0]) if tests[0] != root else "."
        found.notes.append(f"tests: {rel(root, tests[0] / 'tests')}/")
    if ini:
        script = next((p for p in ini.parent.glob("scripts/*.sh")
                       if "alembic" in p.read_text()), None)
        if script:
            found.values["migrate_command"] = f"sh {rel(ini.parent, script)}"
            found.notes.append(f"migrations run by {rel(root, script)}")
    prefix = found.image_env.shell_prefix()
    if ini and prefix:
        found.values["migrate_command"] = prefix + str(
            found.values.get("migrate_command", Settings.migrate_command))


def detect_start_migrations(root: Path, found: Found) -> None:
    """Warn when the container's start runs migrations (the migrate-at-start check)."""
    keys = ("dockerfile", "context", "compose_file", "service", "migrate_command")
    values: dict[str, Any] = {k: v for k, v in found.values.items() if k in keys}
    settings = Settings(root=root, **values)
    hits = start_migrations(settings)
    for hit in hits:
        found.warnings.append(
            f"the {hit.where} runs migrations at every start"
            + (f" ({hit.script})" if hit.script else "")
            + ": a rollback would start the older release against the newer schema")
    if hits:
        found.warnings.append(f"fix: {fix_text(settings, hits)}")


def detect_proxy(root: Path, found: Found) -> None:
    """Zero downtime by default: the proxy (Caddy, blue/green switches) for a web service
    that can go behind it, with its port and health path; else proxy = false, saying why.
    The compose file stays as written: the deploy merges its proxy form over it."""
    compose, name = found.values.get("compose_file"), found.values.get("service")
    service: object = None
    if compose and name:
        try:
            data = yaml.safe_load((root / str(compose)).read_text()) or {}
            service = (data.get("services") or {}).get(name)
        except yaml.YAMLError:  # said by detect_compose
            service = None
    if not isinstance(service, dict):
        why = "no web service found in the compose file"
    else:
        dockerfile_path = root / str(found.values["dockerfile"]) if found.values.get(
            "dockerfile") else None
        verdict = initproxy.fit(root, str(name), service, dockerfile_path)
        why = verdict.why_not
    if why:
        found.values["proxy"] = False
        found.remarks["proxy"] = f"not behind the proxy: {why}"
        found.warnings.append(f"not behind the proxy (proxy = false): {why}; each release "
                              "recreates the container, and requests fail for its seconds")
        return
    found.values["proxy"] = True
    found.values["app_port"] = verdict.port
    found.notes.append(f"the proxy (zero-downtime switches): service '{name}' listens on "
                       f"{verdict.port} ({verdict.port_from}); its compose file stays as "
                       "written (the deploy drops its published ports and joins the proxy's "
                       "network in an override of its own)")
    if verdict.health_path:
        found.values["health_path"] = verdict.health_path
        found.notes.append(f"health path {verdict.health_path} ({verdict.health_from}): a new "
                           "release takes traffic once it answers 200 there through Caddy")
    else:
        found.todo.append(
            "health_path: no health route found (no URL in a Docker healthcheck, no "
            "/health route): add a route that answers 200 when the app can serve, and set "
            "health_path to it (a switch waits for 200 on it)")
    found.values["proxy_tls"] = "auto"
    found.todo.append("proxy_host: the app's host name(s), DNS pointing at the VM (ports 80 "
                      "and 443 reachable for Let's Encrypt; or proxy_tls = \"off\")")


def detect(root: Path) -> Found:
    found = Found()
    detect_dockerfile(root, found)
    detect_compose(root, found)
    detect_app(root, found)
    detect_start_migrations(root, found)
    if (root / ".env.example").exists():
        found.values["env_example"] = ".env.example"
    else:
        found.todo.append("no .env.example: list every variable the app reads in it")
    detect_proxy(root, found)
    if "image" not in found.values:
        found.todo.append("image: the registry and name to push to "
                          "(e.g. registry.example.com/app)")
    found.todo.append("host, user, key_file: the VM (and known_hosts, or ssh-keyscan it first)")
    return found


EXPLAIN = {
    "image": "where `inv push` sends the image (registry/name)",
    "dockerfile": "the app's Dockerfile",
    "context": "the build context (paths in the Dockerfile are relative to it)",
    "compose_file": "the compose file uploaded to the VM",
    "service": "the compose service that runs the app",
    "image_variable": "the compose variables the app's image line uses: the deploy sets them",
    "database": "sqlite, postgres or none: the kind of the scratch database the checks use",
    "postgres_service": "the compose service of the database (its image is the scratch one)",
    "postgres_db": "the database the VM backs up before migrating",
    "alembic_ini": "Alembic's config (the migrations check)",
    "database_url_env": "the variable the app reads its database URL from",
    "database_env": "the variables the app builds its database URL from (the checks' scratch "
                    "database is passed in them)",
    "lock_kind": "requirements (pip-compile), uv (uv.lock) or poetry (poetry.lock)",
    "test_dir": "where `inv test` runs the tests",
    "migrate_command": "what the VM runs (in the new image) to migrate before switching",
    "smoke_command": "what `inv smoke` runs in the built image (its own environment's Python)",
    "env_example": "every variable the app reads, with placeholder values",
    "proxy": "zero-downtime releases: Caddy in front, the new container started next to the "
             "old one and\n# switched to once healthy (README \"Zero-downtime releases\")",
    "app_port": "the port the app listens on in its container (Caddy dials it)",
    "health_path": "answers 200 when the app can serve: a new release takes traffic after it",
    "proxy_tls": "auto: Let's Encrypt certificates for proxy_host; internal: Caddy's own CA; "
                 "off: plain HTTP",
}


def render(found: Found) -> str:
    lines = ["# deploy.toml, written by `inv init`. Every key: README \"Settings\"; `inv config`",
             "# prints the effective values.", ""]
    for key, value in found.values.items():
        if key == "tag_variable":
            continue
        if key in EXPLAIN:
            lines.append(f"# {EXPLAIN[key]}")
        if key in found.remarks:
            lines.append(f"# {found.remarks[key]}")
        lines.append(f"{key} = {toml_value(value)}")
        if key == "image_variable":
            lines.append(f"tag_variable = {toml_value(found.values['tag_variable'])}")
    if found.values.get("proxy") and "proxy_host" not in found.values:
        lines += ["# the app's host name(s), comma-separated: FILL IN",
                  '# proxy_host = "app.example.com"']
    if "image" not in found.values:
        lines += ["# where `inv push` sends the image (registry/name): FILL IN",
                  '# image = "registry.example.com/app"']
    lines += ["", "# The VM: FILL IN", '# host = "vm.example.com"', '# user = "deploy"',
              '# key_file = "~/.ssh/id_ed25519"', '# app_dir = "/srv/app"', ""]
    return "\n".join(lines)


def toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write(root: Path, force: bool = False) -> tuple[Found, list[Path]]:
    """Detect and write the three files; without `force`, only those that do not exist yet
    (refuses when all three do)."""
    targets: dict[Path, str | None] = {root / SETTINGS_FILE: None, root / "tasks.py": TASKS_PY,
                                       root / "fabfile" / "__init__.py": FABFILE_PY}
    if not force:
        existing = [p for p in targets if p.exists()]
        if len(existing) == len(targets):
            raise DeployError(
                f"{', '.join(rel(root, p) for p in existing)} already exist; nothing was "
                "written", "inv init --force overwrites them")
        targets = {p: text for p, text in targets.items() if p not in existing}
    found = Found()
    if root / SETTINGS_FILE in targets:
        found = detect(root)
        targets[root / SETTINGS_FILE] = render(found)
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text or "")

    return found, [*targets, *write_samples(root)]


def run(root: Path | None = None, force: bool = False) -> None:
    """Detect, write, and say what was found and what is left to fill in."""
    root = (root or Path.cwd()).resolve()
    found, written = write(root, force=force)
    if found.notes:
        print("found:")
    for note in found.notes:
        print(f"  {note}")
    print("wrote: " + ", ".join(rel(root, p) for p in written))
    if root / SETTINGS_FILE not in written:
        print(f"kept: {SETTINGS_FILE} (`inv init --force` rewrites it from what it detects)")
    for warning in found.warnings:
        print(("  " if warning.startswith("fix:") else "warning: ") + warning)
    if found.todo:
        print("fill in (deploy.toml), then run `inv check`:")
        for item in found.todo:
            print(f"  - {item}")


def main() -> None:
    """`deploy-init [--force]`: `inv init` for a repo that has no tasks.py yet."""
    parser = argparse.ArgumentParser(prog="deploy-init", description=main.__doc__)
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args()
    try:
        run(force=args.force)
    except DeployError as exc:
        print(f"error: {exc.message}" + (f"\n  fix: {exc.fix}" if exc.fix else ""),
              file=sys.stderr)
        sys.exit(exc.exit_code)
