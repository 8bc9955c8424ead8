"""What `inv init` finds for the proxy (zero-downtime switches behind Caddy): whether the app's
web service can go behind it, the port it listens on in its container, and the path that
answers 200 when it is healthy.

The port comes from the service's `ports:` (the container side), `expose:`, the Dockerfile's
EXPOSE, or the server's own flags in the start command (`--port`, `--bind`; uvicorn, gunicorn,
hypercorn and `fastapi run` listen on 8000 without one). The health path comes from the
service's Docker healthcheck (compose, else the Dockerfile's HEALTHCHECK), else from the
app's routes (`@app.get("/health")`, a router's with its own prefix).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from deploy.core.errors import DeployError
from deploy.local import dockerfile
from deploy.local.checks.startup import command_text

SERVERS = ("uvicorn", "gunicorn", "hypercorn", "fastapi", "granian", "daphne")
DEFAULT_SERVER_PORT = 8000  # uvicorn's, gunicorn's, hypercorn's and `fastapi run`'s
PORT_FLAG_RE = re.compile(r"(?:--port|-p)[= ]['\"]?(\d{2,5})\b")
BIND_RE = re.compile(r"(?:--bind|-b)[= ]['\"]?(?:[\w.\[\]:-]*:)?(\d{2,5})\b")
URL_RE = re.compile(r"https?://[^/\s'\"]+?(?::(?P<port>\d+))?(?P<path>/[^\s'\"),;]*)")
HEALTH_NAMES = ("health", "healthz", "healthcheck", "health-check", "health_check", "livez",
                "readyz", "ready", "ping", "alive")
SKIP_DIRS = {".venv", "venv", "node_modules", "tests", "test", "migrations", "alembic",
             ".git", "__pycache__", "site-packages"}


@dataclass
class ProxyFit:
    """The verdict: `why_not` is '' when the service can go behind the proxy."""

    why_not: str = ""
    port: int = 0
    port_from: str = ""
    health_path: str = ""
    health_from: str = ""
    notes: list[str] = field(default_factory=list)


def container_port(entry: object) -> int:
    """The container side of a compose `ports:` entry (`127.0.0.1:8000:8000`, `8000/tcp`,
    `{target: 8000}`); 0 when it is a variable or a range."""
    if isinstance(entry, dict):
        entry = entry.get("target", "")
    text = str(entry).strip().strip("\"'")
    last = re.sub(r"/(tcp|udp)$", "", text.rpartition(":")[2] if ":" in text else text)
    return int(last) if last.isdigit() else 0


def start_commands(service: dict, parsed: dockerfile.Dockerfile | None) -> list[str]:
    """The service's start command: compose's command/entrypoint, else the image's."""
    commands = [command_text(service.get(key)) for key in ("entrypoint", "command")
                if service.get(key)]
    if parsed is not None:
        commands += [command_text(dockerfile.final_instruction(parsed, word) or "")
                     for word in ("ENTRYPOINT", "CMD")]
    return [c for c in commands if c]


def find_port(service: dict, parsed: dockerfile.Dockerfile | None) -> tuple[int, str]:
    """(the port the app listens on in its container, where that was read); (0, '')."""
    for entry in service.get("ports") or []:
        port = container_port(entry)
        if port:
            return port, "its compose ports"
    for entry in service.get("expose") or []:
        port = container_port(entry)
        if port:
            return port, "its compose expose"
    if parsed is not None:
        for stage in dockerfile.stage_chain(parsed):
            for word, rest in stage.instructions:
                if word == "EXPOSE":
                    port = container_port(rest.split()[0]) if rest.split() else 0
                    if port:
                        return port, "the Dockerfile's EXPOSE"
    for command in start_commands(service, parsed):
        words = re.split(r"[\s/]+", command)
        if not any(w in SERVERS for w in words):
            continue
        found = PORT_FLAG_RE.search(command) or BIND_RE.search(command)
        if found:
            return int(found.group(1)), "its start command"
        server = next(w for w in words if w in SERVERS)
        return DEFAULT_SERVER_PORT, f"{server}'s default (its start command names no port)"
    return 0, ""


def healthcheck_url(service: dict, parsed: dockerfile.Dockerfile | None
                    ) -> tuple[str, int, str]:
    """(path, port, where) of the URL the Docker healthcheck asks; ('', 0, '') if none."""
    check = service.get("healthcheck") or {}
    tests = [("its compose healthcheck", command_text(check.get("test")))] if isinstance(
        check, dict) and not check.get("disable") else []
    if parsed is not None:
        tests.append(("the Dockerfile's HEALTHCHECK",
                      dockerfile.final_instruction(parsed, "HEALTHCHECK") or ""))
    for where, text in tests:
        found = URL_RE.search(text or "")
        if found:
            return found.group("path"), int(found.group("port") or 0), where
    return "", 0, ""


def route_health_path(root: Path) -> tuple[str, str]:
    """A health route of the app's code: (path, file) or ('', ''). A router's route counts
    only when no `include_router(..., prefix=...)` puts it under a path of its own."""
    found: list[tuple[int, bool, str, str]] = []  # (name rank, on a router, path, file)
    prefixed_includes = False
    for path in sorted(root.rglob("*.py")):
        if SKIP_DIRS & set(path.relative_to(root).parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        apps: set[str] = set()
        routers: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "include_router" and \
                    any(k.arg == "prefix" for k in node.keywords):
                prefixed_includes = True
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                continue
            kind = call_name(node.value)
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if kind in ("FastAPI", "Starlette", "Flask", "Quart"):
                apps.update(names)
            elif kind == "APIRouter":
                prefix = next((k.value.value for k in node.value.keywords if k.arg == "prefix"
                               and isinstance(k.value, ast.Constant)
                               and isinstance(k.value.value, str)), "")
                routers.update(dict.fromkeys(names, prefix))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for route in filter(None, map(route_of, node.decorator_list)):
                owner, method, where = route
                last = where.rstrip("/").rpartition("/")[2].lower()
                if method not in ("get", "api_route", "route") or last not in HEALTH_NAMES:
                    continue
                if owner in apps or owner in routers:
                    found.append((HEALTH_NAMES.index(last), owner not in apps,
                                  routers.get(owner, "") + where,
                                  path.relative_to(root).as_posix()))
    found = [f for f in found if not (f[1] and prefixed_includes)]
    if not found:
        return "", ""
    _, _, full, where = min(found)
    return full, where


def call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else (
        func.attr if isinstance(func, ast.Attribute) else "")


def route_of(deco: ast.expr) -> tuple[str, str, str] | None:
    """(object, method, path) of a route decorator `@obj.get("/path")`."""
    if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
            and isinstance(deco.func.value, ast.Name) and deco.args
            and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
        return None
    return deco.func.value.id, deco.func.attr, deco.args[0].value


def fit(root: Path, service_name: str, service: dict, dockerfile_path: Path | None) -> ProxyFit:
    """Whether the web service `service_name` can go behind the proxy, with its port and
    health path; `why_not` says what stops it."""
    parsed = None
    if dockerfile_path is not None:
        try:
            parsed = dockerfile.parse(dockerfile_path)
        except DeployError:
            parsed = None
    result = ProxyFit()
    if service.get("network_mode"):
        result.why_not = (f"service '{service_name}' has network_mode "
                          f"{service['network_mode']!r}: it cannot join the proxy's network")
        return result
    if service.get("container_name"):
        result.why_not = (f"service '{service_name}' has container_name "
                          f"{service['container_name']!r}: two containers of it run side by "
                          "side during a switch, and cannot share one name")
        return result
    path, check_port, check_from = healthcheck_url(service, parsed)
    result.port, result.port_from = find_port(service, parsed)
    if not result.port and check_port:
        result.port, result.port_from = check_port, check_from
    if not result.port:
        result.why_not = (f"cannot tell which port service '{service_name}' listens on (no "
                          "`ports:` or `expose:`, no EXPOSE, no web server in its start "
                          "command): it may not be a web service")
        return result
    if path:
        result.health_path, result.health_from = path, check_from
    else:
        result.health_path, where = route_health_path(root)
        result.health_from = f"the route in {where}" if where else ""
    return result
