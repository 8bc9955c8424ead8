"""The ranges and shapes of setting values, checked when the settings are read: before anything
connects, a bad value is one error naming its key and where it was set.

What they keep out: an app directory that is the VM's root, a system directory or another
directory by another name (`..`); files the tool writes outside it; host names that would
break the proxy's config; a health URL that is not the VM's own; timeouts and retention
counts that make no sense (`keep_backups = 0` deleted the backup just taken); a registry
password too short to keep out of the output.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from deploy.core.errors import DeployError

# Never an app's directory: the root, the system's own trees, and the bare parents apps go in.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                "/proc", "/run", "/sbin", "/sys", "/usr")
SYSTEM_DIRS = frozenset({"/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp",
                         "/var", "/var/lib", "/var/lib/docker", "/var/log", "/var/tmp"})
LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MIN_SECRET = 8  # shorter values are not redacted from the output (they would match anywhere)
POSITIVE = ("boot_timeout", "connect_timeout", "network_timeout", "lock_lease",
            "health_timeout", "swarm_timeout")
AT_LEAST_ONE = ("keep_backups", "keep_releases")
NOT_NEGATIVE = ("batch_limit", "batch_wait", "disk_headroom_mb")
PORTS = ("port", "app_port")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def check(values: dict[str, Any], source: Callable[[str], str],
          vm_hosts: Iterable[str] = ()) -> None:
    """Refuse the first value out of its range; `source(key)` says where it was set,
    `vm_hosts` are the VMs' own names (`host`, the roles' hosts)."""

    def bad(key: str, why: str, fix: str) -> DeployError:
        return DeployError(f"setting '{key}' in {source(key)} {why}, got {values[key]!r}",
                           f"{fix} ('{key}' in {source(key)})")

    for key in POSITIVE:
        if key in values and not values[key] > 0:
            raise bad(key, "must be a number of seconds above 0", "give a positive number")
    for key in AT_LEAST_ONE:
        if key in values and values[key] < 1:
            raise bad(key, "must be 1 or more (it counts the newest kept, the one just made "
                      "included)", "keep at least 1")
    retry = values.get("maintenance_retry_after")
    if retry is not None and not 1 <= retry <= 86400:
        raise bad("maintenance_retry_after", "must be seconds from 1 to 86400 (the 503's "
                  "Retry-After header)", "give the seconds a client should wait, e.g. 30")
    for key in NOT_NEGATIVE:
        if key in values and values[key] < 0:
            raise bad(key, "must not be negative", "give 0 or more")
    for key in PORTS:
        if key in values and not 1 <= values[key] <= 65535:
            raise bad(key, "must be a port number (1-65535)", "give a port number")
    for key in ("app_dir", "proxy_dir"):
        if key in values:
            problem = vm_directory_problem(values[key])
            if problem:
                raise bad(key, f"must be an app's own directory on the VM: {problem}",
                          'give an absolute path of its own, e.g. "/srv/myapp"')
    if "compose_file" in values:
        problem = inside_problem(values["compose_file"])
        if not problem and "/" in values["compose_file"]:
            problem = ("it is in a subdirectory; compose reads `.env` and the compose file's "
                       "relative paths from the compose file's own directory, and the tool "
                       "keeps them in app_dir")
        if problem:
            raise bad("compose_file", f"must name a file directly in app_dir: {problem}",
                      "move the compose file to the app repo's root and name it alone "
                      '(e.g. "compose.yaml")')
    if "sqlite_path" in values:
        problem = inside_problem(values["sqlite_path"])
        if problem:
            raise bad("sqlite_path", f"must be a path inside app_dir: {problem}",
                      'give the database file relative to app_dir (e.g. "data/app.db")')
    if values.get("proxy_host"):
        problem = host_names_problem(values["proxy_host"])
        if problem:
            raise bad("proxy_host", f"must be host names, comma-separated: {problem}",
                      'give lower-case DNS names (e.g. "app.example.com,www.example.com")')
    if values.get("health_url"):
        problem = health_url_problem(values["health_url"], vm_hosts)
        if problem:
            raise bad("health_url", f"must be an http(s) URL on the VM itself: {problem}",
                      'give the app as the VM sees it (e.g. "http://127.0.0.1:8000/health")')
    if values.get("database_url"):
        problem = database_url_problem(values["database_url"])
        if problem:
            raise DeployError(
                f"setting 'database_url' in {source('database_url')} must be a Postgres URL "
                f"(postgresql://USER:PASSWORD@HOST:PORT/NAME): {problem}",
                f"fix it ('database_url' in {source('database_url')})")
        if values.get("database_host"):
            raise DeployError(
                f"settings 'database_host' ({source('database_host')}) and 'database_url' "
                f"({source('database_url')}) both say where the database lives",
                "keep one: database_host for the compose service on that host, database_url "
                "for an external database")
        if values.get("database", "sqlite") != "postgres":
            raise DeployError(
                f"setting 'database_url' in {source('database_url')} names an external Postgres "
                f"database, but database = {values.get('database', 'sqlite')!r}",
                'set database = "postgres", or unset database_url')
    if values.get("swarm_workers"):
        if values.get("target", "compose") != "swarm":
            raise bad("swarm_workers", "names hosts to join a swarm, but target is not "
                      "\"swarm\"", 'set target = "swarm", or unset swarm_workers')
        names = [host_name(h) for h in values["swarm_workers"].split(",")]
        problem = host_names_problem(",".join(names))
        if problem:
            raise bad("swarm_workers", f"must be hosts ([user@]host[:port]), comma-separated: "
                      f"{problem}", 'give the workers\' addresses (e.g. "10.0.0.6,10.0.0.7")')
    password = values.get("registry_password")
    if password and len(password) < MIN_SECRET:
        raise DeployError(
            f"setting 'registry_password' in {source('registry_password')} is shorter than "
            f"{MIN_SECRET} characters: too short to be told apart from other text, it would "
            "not be redacted from the output",
            f"use a password of {MIN_SECRET} characters or more for the registry")


def vm_directory_problem(path: str) -> str:
    """Why `path` cannot be an app's directory on the VM ('' if it can)."""
    if CONTROL_RE.search(path):
        return "it has a control character (a line break?)"
    if not path.startswith("/"):
        return "it is not absolute"
    if "/../" in f"{path}/" or "/./" in f"{path}/":
        return "it has `..` or `.` in it (another directory by another name)"
    if posixpath.normpath(path) != path or path.startswith("//"):
        return f"it is not written plainly (normalised: {posixpath.normpath(path)})"
    if path in SYSTEM_DIRS:
        return f"{path} is the VM's own (the tool writes compose.yaml, .deploy, backups in it)"
    tree = next((t for t in SYSTEM_TREES if path == t or path.startswith(t + "/")), "")
    if tree:
        return f"it is in {tree}, a system directory"
    return ""


def inside_problem(relative: str) -> str:
    """Why `relative` is not a path inside app_dir ('' if it is)."""
    if not relative:
        return "it is empty"
    if CONTROL_RE.search(relative):
        return "it has a control character (a line break?)"
    if relative.startswith(("/", "~")):
        return "it is not relative to app_dir"
    parts = relative.split("/")
    if ".." in parts or "." in parts or "" in parts:
        return "it has `..`, `.` or an empty part in it"
    return ""


def host_names_problem(value: str) -> str:
    """Why `value` is not a comma-separated list of DNS host names ('' if it is)."""
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            return "an empty name"
        if name != name.lower():
            return f"{name!r} has upper case"
        if len(name) > 253 or not all(LABEL_RE.match(label) for label in name.split(".")):
            return (f"{name!r} is not a host name (letters, digits and `-` in dot-separated "
                    "labels; no port, path, quote, brace or wildcard)")
    return ""


def health_url_problem(url: str, vm_hosts: Iterable[str]) -> str:
    """Why `url` is not an http(s) URL of the VM itself ('' if it is). The VM asks it, so its
    host must be the VM's loopback or one of its own names."""
    if CONTROL_RE.search(url) or " " in url:
        return "it has a space or a control character"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"its scheme is {parts.scheme or 'missing'!r}"
    if parts.username is not None or parts.password is not None:
        return "it carries a user name or password"
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        return "its port is not a port number"
    host = (parts.hostname or "").lower()
    if not host:
        return "it has no host"
    if is_loopback(host) or host in {h.lower() for h in vm_hosts}:
        return ""
    return (f"{host} is not the VM's loopback (127.0.0.1, localhost, ::1) nor its own name "
            "(`host`)")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(spec: str) -> str:
    """The host of a `[user@]host[:port]` entry (as `host` and the roles' hosts are written)."""
    spec = spec.strip().rsplit("@", 1)[-1]
    if spec.startswith("["):
        return spec[1:].split("]", 1)[0]
    return spec.rsplit(":", 1)[0] if spec.count(":") == 1 else spec


def database_url_problem(url: str) -> str:
    """Why `url` is not the URL of a Postgres database ('' if it is); never shows it."""
    if CONTROL_RE.search(url) or " " in url:
        return "it has a space or a control character"
    parts = urllib.parse.urlsplit(url)
    if not re.match(r"^postgres(ql)?(\+[\w.-]+)?$", parts.scheme):
        return f"its scheme is {parts.scheme or 'missing'!r}"
    if not parts.hostname:
        return "it names no host"
    if not parts.path.strip("/"):
        return "it names no database"
    return ""
