"""Plain helpers for the remote tests (tests/test_remote.py): the example images built once,
an app repo wired to its own app directory on a sandbox VM, and the VM's sshd log.

A sandbox VM (sandbox/vms.py) has its own network, /srv, Docker engine and sshd, but the laptop
reaches its insides without SSH: its /srv through a laptop-side directory (`App.vm()`), its
engine through a socket (`App.vm_docker()`), a command inside it through nsenter (`App.vm_run()`).
That keeps the checks from adding SSH connections of their own to the sshd log, which some
tests count.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from conftest import EXAMPLE, REGISTRY, child_env, git, make_example_repo
from dotenv import dotenv_values

from deploy.commands.vm import project_name
from deploy.core.registry import tag_digest
from deploy.core.settings import Settings, load_settings
from sandbox import Sandbox
from sandbox.apprepo import FABFILE, apply_v2
from sandbox.ports import free_port
from sandbox.vms import Vm

T = TypeVar("T")
FORWARD = Path(__file__).resolve().parents[1] / "sandbox" / "forward.py"

BROKEN_MIGRATION = '''"""a migration that fails

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT no_such_function()")


def downgrade() -> None:
    pass
'''


# A migrate_command that waits until the test creates GATE in the app's directory on the VM
# (the example mounts its data/ at /data): a deploy held in its migration for exactly as long
# as a test needs, where a fixed sleep waits the longest a loaded machine might need.
GATE = "data/migration-go"
GATED_MIGRATION = f"until [ -e /{GATE} ]; do sleep 0.1; done; alembic upgrade head"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"




def run(argv: list[str], *, cwd: Path | str | None = None, env: dict | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def docker(*args: str, cwd: Path | str | None = None, env: dict | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run(["docker", *args], cwd=cwd, env=env, timeout=timeout)


def checked(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def add_fabfile(repo: Path) -> None:
    (repo / "fabfile").mkdir(exist_ok=True)
    (repo / "fabfile" / "__init__.py").write_text(FABFILE)


def make_app_repo(dest: Path, source: Path = EXAMPLE) -> Path:
    """A committed git copy of an example's v1 (example/ unless `source` names another) with
    tasks.py and fabfile/, as an app repo has."""
    return make_example_repo(dest, source=source, fabfile=True)


# --------------------------------------------------------------------------- images


@dataclass
class Images:
    """The example images of this session, all pushed to the sandbox registry."""

    image: str  # registry/name, no tag
    name: str  # the repository path in the registry
    v1: str
    v2: str
    broken: str  # v1 plus a migration 0002 that raises
    unhealthy: str  # v1 whose /health always answers 503 (ENV APP_FAIL_HEALTH=1)

    def ref(self, tag: str) -> str:
        return f"{self.image}:{tag}"

    @property
    def tags(self) -> list[str]:
        return [self.v1, self.v2, self.broken, self.unhealthy]


def buildx(ref: str, context: Path) -> None:
    checked(docker("buildx", "build", "--load", "--platform", "linux/amd64", "--quiet",
                   "-t", ref, str(context), timeout=1200))


def build_images(root: Path, source: Path = EXAMPLE, prefix: str = "rt-") -> Images:
    """Build v1, v2, broken-migration and unhealthy images of an example (example/ unless
    `source` names another) once; push them all."""
    name = unique(prefix)
    image = f"{REGISTRY}/{name}"
    repo = make_app_repo(root / "app", source)
    v1 = git(repo, "rev-parse", "--short=7", "HEAD")
    broken_dir = root / "broken"
    unhealthy_dir = root / "unhealthy"
    ignore = shutil.ignore_patterns(".git")
    shutil.copytree(repo, broken_dir, ignore=ignore)
    shutil.copytree(repo, unhealthy_dir, ignore=ignore)
    (broken_dir / "migrations" / "versions" / "0002_broken.py").write_text(BROKEN_MIGRATION)
    dockerfile = unhealthy_dir / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\nENV APP_FAIL_HEALTH=1\n")

    images = Images(image=image, name=name, v1=v1, v2="", broken=f"{v1}-broken",
                    unhealthy=f"{v1}-unhealthy")
    buildx(images.ref(v1), repo)
    images.v2 = apply_v2(repo, source)
    buildx(images.ref(images.v2), repo)
    buildx(images.ref(images.broken), broken_dir)
    buildx(images.ref(images.unhealthy), unhealthy_dir)
    for tag in images.tags:
        checked(docker("push", "--quiet", images.ref(tag)))
    return images


def retiring(vm: Vm, app_dir: str) -> list[str]:
    """The ids of the old containers a blue/green switch still stops in the background in
    `app_dir` on `vm`."""
    marks = vm.host_path(app_dir) / ".deploy" / "retiring"
    ids = sorted(p.name for p in marks.iterdir()) if marks.is_dir() else []
    if not ids:
        return []
    # a mark outlives its container when the stop was cut short (the engine killed)
    there = run(vm.docker("ps", "-aq", "--no-trunc")).stdout.split()
    return [i for i in ids if i in there]


def wait_retired(vm: Vm, app_dir: str, timeout: float = 30) -> None:
    """Until the old containers a switch retires are gone (a deploy does not wait)."""
    deadline = time.monotonic() + timeout
    while retiring(vm, app_dir):
        assert time.monotonic() < deadline, f"still stopping: {retiring(vm, app_dir)}"
        time.sleep(0.1)


def remove_local_images(image: str, vm: Vm | None = None) -> None:
    """Remove every tag of `image` from the laptop's engine (or from `vm`'s)."""
    engine = vm.docker if vm else (lambda *args: ["docker", *args])
    refs = run(engine("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", image)).stdout.split()
    if refs:
        run(engine("image", "rm", "--force", *refs))


def delete_from_registry(name: str) -> None:
    """Delete every tag of repository `name` from the sandbox registry (best effort)."""
    for tag in registry_tags(name):
        try:
            digest = tag_digest(f"{REGISTRY}/{name}", tag)
            if digest and digest.startswith("sha256:"):
                request = urllib.request.Request(
                    f"http://{REGISTRY}/v2/{name}/manifests/{digest}", method="DELETE")
                urllib.request.urlopen(request, timeout=10).close()
        except Exception:  # noqa: BLE001 - a tag sharing a deleted manifest is gone already
            pass


def registry_tags(name: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/{name}/tags/list", timeout=10) as r:
            return json.load(r).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


# --------------------------------------------------------------------------- sshd log


class SshdLog:
    """The sandbox sshd's log (LogLevel VERBOSE): what connected since a mark."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, mark: int) -> list[str]:
        with open(self.path, "rb") as handle:
            handle.seek(mark)
            return handle.read().decode(errors="replace").splitlines()

    def connections(self, mark: int) -> int:
        return sum("Connection from" in line for line in self.since(mark))

    def logins(self, mark: int) -> int:
        return sum("Accepted publickey" in line for line in self.since(mark))

    def measure(self, action: Callable[[], T], what: str, expected: int, attempts: int = 3
                ) -> tuple[T, int, list[str]]:
        """Run `action` and count the sshd lines of kind `what` ("connections" or "logins")
        it caused; (action's result, count, log lines).

        The sandbox sshd is shared: another test process may connect at the same moment. So
        an action whose count is not `expected` is run again, up to `attempts` times: a tool
        that really opens the wrong number of connections does so every time.
        """
        for _ in range(attempts):
            mark = self.mark()
            result = action()
            count = getattr(self, what)(mark)
            if count == expected:
                break
        return result, count, self.since(mark)


# --------------------------------------------------------------------------- one app


@dataclass
class App:
    """An app repo deploying to its own app directory (and port) on a sandbox VM."""

    repo: Path
    images: Images
    app_dir: str  # the path on the VM
    port: int
    cache: Path
    machine: Vm
    env: dict[str, str] = field(default_factory=dict)
    tunnel: subprocess.Popen | None = None
    tunnel_port: int = 0
    proxy: Proxy | None = None  # set by use_proxy(): served through the VM's Caddy

    @classmethod
    def create(cls, repo: Path, images: Images, cache: Path, sandbox: Sandbox,
               image: str = "", vm: Vm | None = None) -> App:
        """Give `repo` its own app_dir and APP_PORT; point it at a sandbox VM (default vm1).

        DEPLOY_HEALTH_URL is the app's /health as the VM sees it (its loopback): the deploy asks it
        on the VM, after the container's own healthcheck.
        """
        vm = vm or sandbox.vm(1)
        app_dir = f"/srv/{unique('t-')}"
        port = free_port()
        env_file = repo / ".env"
        lines = [line for line in env_file.read_text().splitlines()
                 if not line.startswith("APP_PORT=")]
        env_file.write_text("\n".join([*lines, f"APP_PORT={port}"]) + "\n")
        env = {
            "DEPLOY_IMAGE": image or images.image,
            "DEPLOY_HOST": vm.address,
            "DEPLOY_PORT": "22",
            "DEPLOY_USER": sandbox.ssh_user,
            "DEPLOY_KEY_FILE": str(sandbox.key_file),
            "DEPLOY_KNOWN_HOSTS": str(sandbox.known_hosts),
            "DEPLOY_APP_DIR": app_dir,
            "DEPLOY_HEALTH_URL": f"http://127.0.0.1:{port}/health",
            # the compose switch, on the app's own port, unless use_proxy() (the examples'
            # deploy.toml turns the proxy on)
            "DEPLOY_PROXY": "false",
            # the suite's workers share 2 cores: an app may take a minute to turn healthy;
            # tests of an unhealthy image set their own, shorter timeout
            "DEPLOY_HEALTH_TIMEOUT": "120",
            "XDG_CACHE_HOME": str(cache),
        }
        return cls(repo=repo, images=images, app_dir=app_dir, port=port, cache=cache, machine=vm,
                   env=env)

    # -- running the tools, as a user would ------------------------------------------------
    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return child_env({**self.env, **(extra or {})})

    def fab(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "fabric", *args], cwd=self.repo,
                   env=self._env(env), timeout=timeout)

    def inv(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "invoke", *args], cwd=self.repo,
                   env=self._env(env), timeout=timeout)

    def fab_ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = self.fab(*args, env=env)
        assert proc.returncode == 0, f"fab {' '.join(args)} exited {proc.returncode}:\n" + \
            output(proc)
        return output(proc)

    def deploy(self, tag: str, env: dict[str, str] | None = None) -> str:
        return self.fab_ok("deploy", f"--tag={tag}", env=env)

    def settings(self, **overrides: str) -> Settings:
        """The settings `fab` would read in this repo with this app's environment."""
        environ = {k: v for k, v in self.env.items() if k.startswith("DEPLOY_")}
        return load_settings(self.repo, environ={**environ, **overrides})

    def use_proxy(self, proxy: Proxy) -> App:
        """Serve this app behind `proxy` (blue/green switches): compose.proxy.yaml, no
        published port, its own host name."""
        self.proxy = proxy
        env_file = self.repo / ".env"
        # compose.proxy.yaml names its network ${PROXY_NETWORK:-deploy-proxy}
        env_file.write_text(env_file.read_text() + f"PROXY_NETWORK={proxy.network}\n")
        self.env.update({
            "DEPLOY_PROXY": "true",
            "DEPLOY_PROXY_HOST": self.host,
            "DEPLOY_COMPOSE_FILE": "compose.proxy.yaml",
            "DEPLOY_HEALTH_URL": "",
            **proxy.settings(),
        })
        return self

    @property
    def host(self) -> str:
        """The host name the app answers to behind the proxy."""
        return f"{self.project}.test"

    # -- HTTP ------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        """The app's URL as the laptop reaches it. Behind the proxy: Caddy's port on the
        VM's address, as users reach it (requests carry the app's Host: `request()`).
        Else: the example publishes its port on the VM's loopback only, so this goes through
        a tunnel (as `ssh -L` would): a laptop port of its own (never the app's port number)
        forwarded to the VM's 127.0.0.1:PORT."""
        if self.proxy:
            return f"http://{self.machine.address}:{self.proxy.http_port}{path}"
        if self.tunnel is None or self.tunnel.poll() is not None:
            self.tunnel_port = free_port()
            self.tunnel = subprocess.Popen(
                [sys.executable, str(FORWARD), "--connect-netns", str(self.machine.netns_file),
                 str(self.tunnel_port), f"127.0.0.1:{self.port}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert self.tunnel.stdout is not None
            line = self.tunnel.stdout.readline()
            assert "listening" in line, f"the tunnel to {self.machine.name} failed: {line}"
        return f"http://127.0.0.1:{self.tunnel_port}{path}"

    def vm_url(self, path: str) -> str:
        """The app's URL as the VM itself sees it."""
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, data: bytes | None = None, method: str | None = None
                ) -> urllib.request.Request:
        """A request for `path` as users send it (through the proxy: with the app's Host)."""
        headers = {"Host": self.host} if self.proxy else {}
        return urllib.request.Request(self.url(path), headers=headers, data=data, method=method)

    def get(self, path: str, timeout: float = 5) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(self.request(path), timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get_json(self, path: str) -> object:
        status, body = self.get(path)
        assert status == 200, f"GET {path} -> {status}: {body}"
        return body

    def version(self) -> dict:
        return self.get_json("/version")  # type: ignore[return-value]

    def post_item(self, name: str, **fields: object) -> dict:
        request = self.request("/items", data=json.dumps({"name": name, **fields}).encode(),
                               method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
            return json.load(response)

    def wait_http(self, path: str, timeout: float = 60) -> int | str:
        deadline = time.monotonic() + timeout
        last: int | str = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.get(path, timeout=2)[0]
            except (OSError, http.client.HTTPException) as exc:
                last = f"no answer ({exc})"
            if last == 200:
                return 200
            time.sleep(0.3)
        return last

    # -- the VM's app directory, engine and commands (no SSH) -------------------------------
    @property
    def project(self) -> str:
        return project_name(self.app_dir)

    def vm(self, relative: str = "") -> Path:
        """The laptop-side path of a file in the app's directory on the VM."""
        root = self.machine.host_path(self.app_dir)
        return root / relative if relative else root

    def vm_docker(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against the VM's engine."""
        return run(self.machine.docker(*args), timeout=timeout)

    def vm_run(self, *argv: str, cwd: str = "",
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """A command run inside the VM (its network, /srv, /run, engine), as root, in `cwd`
        (a path on the VM; default the app's directory)."""
        return run(self.machine.in_vm(*argv, cwd=cwd or self.app_dir), timeout=timeout)

    def history(self) -> list[dict]:
        path = self.vm(".deploy/history.jsonl")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def release_env(self, name: str = ".env") -> dict[str, str]:
        """An env file of the app directory as compose reads it (quotes removed, no $-expansion)."""
        return {k: v or "" for k, v in dotenv_values(self.vm(name), interpolate=False).items()}

    def snapshot(self) -> dict[str, bytes | None]:
        """Contents of the release state files (None when missing)."""
        out: dict[str, bytes | None] = {}
        for name in (".env", ".deploy/history.jsonl", "app.env", "compose.yaml"):
            path = self.vm(name)
            out[name] = path.read_bytes() if path.exists() else None
        out["lock"] = b"held" if self.vm(".deploy/lock").exists() else None
        backups = self.vm("backups")
        out["backups"] = "\n".join(sorted(os.listdir(backups))).encode() if backups.is_dir() \
            else None
        return out

    def backups(self) -> list[str]:
        """The backup files in backups/ (not their NAME.json manifests)."""
        path = self.vm("backups")
        return sorted(n for n in os.listdir(path) if not n.endswith(".json")) \
            if path.is_dir() else []

    def db(self, sql: str, params: tuple = ()) -> list[dict]:
        path = self.vm("data/app.db")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(sql, params)]
        finally:
            conn.close()

    def psql(self, sql: str, service: str = "db", user: str = "app",
             database: str = "app") -> list[list[str]]:
        """Rows of `sql` run by psql in the app's database container on the VM."""
        ids = self.vm_docker("ps", "-q", "--filter",
                              f"label=com.docker.compose.project={self.project}", "--filter",
                              f"label=com.docker.compose.service={service}").stdout.split()
        assert len(ids) == 1, f"expected one {service} container of {self.project}: {ids}"
        proc = self.vm_docker("exec", ids[0], "psql", "-X", "-At", "-F", "\t", "-v",
                               "ON_ERROR_STOP=1", "-U", user, "-d", database, "-c", sql)
        assert proc.returncode == 0, proc.stderr
        return [line.split("\t") for line in proc.stdout.splitlines()]

    @property
    def postgres(self) -> bool:
        """Whether the app keeps its data in Postgres (a compose service), not SQLite: its
        deploy.toml's `database` (read as TOML only: a test may have put a bad setting in)."""
        database = self.env.get("DEPLOY_DATABASE") or tomllib.loads(
            (self.repo / "deploy.toml").read_text()).get("database", "sqlite")
        return database == "postgres"

    def first_column(self, sql: str) -> list[str]:
        """The first column of each row `sql` selects in the app's database (Postgres or
        SQLite)."""
        if self.postgres:
            return [row[0] for row in self.psql(sql)]
        return [next(iter(row.values())) for row in self.db(sql)]

    def item_names(self) -> list[str]:
        return self.first_column("SELECT name FROM items ORDER BY id")

    def db_revision(self) -> str:
        return self.first_column("SELECT version_num FROM alembic_version")[0]

    def retiring(self) -> list[str]:
        return retiring(self.machine, self.app_dir)

    def wait_retired(self, timeout: float = 30) -> None:
        wait_retired(self.machine, self.app_dir, timeout)

    def containers(self, *, running: bool = True, service: str = "",
                   settled: bool = True) -> list[str]:
        """The app's containers (of one compose service, if named); `settled`: once the old
        ones a blue/green switch stops in the background are gone."""
        if settled:
            self.wait_retired()
        args = ["ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        if not running:
            args.insert(1, "-a")
        return self.vm_docker(*args).stdout.split()

    def serving_image(self) -> str:
        """The image the app service's one running container runs (a database service, as
        in the Postgres example, is not counted)."""
        service = self.settings().service
        ids = self.containers(service=service)
        assert len(ids) == 1, f"expected one running {service} container of {self.project}: {ids}"
        return self.vm_docker("inspect", "--format", "{{.Config.Image}}", ids[0]).stdout.strip()

    def container_names(self, *, running: bool = True, settled: bool = True) -> list[str]:
        ids = self.containers(running=running, settled=settled)
        if not ids:
            return []
        out = self.vm_docker("inspect", "--format", "{{.Name}}", *ids).stdout.split()
        return sorted(name.lstrip("/") for name in out)

    def vm_compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A plain `docker compose ARGS` for the app on the VM, as a user would type it in
        the app directory (compose reads its .env; the toolkit's project name)."""
        return self.vm_run("docker", "compose", "--file", self.settings().compose_file,
                           "--project-name", self.project, *args)

    def tear_down(self) -> None:
        """Remove this app's containers, network, volumes and app directory on the VM."""
        label = f"label=com.docker.compose.project={self.project}"
        ids = self.vm_docker("ps", "-aq", "--filter", label).stdout.split()
        if ids:
            self.vm_docker("rm", "--force", "--volumes", *ids)
        for kind in ("network", "volume"):
            names = self.vm_docker(kind, "ls", "-q", "--filter", label).stdout.split()
            if names:
                self.vm_docker(kind, "rm", *names)
        if self.app_dir.startswith("/srv/t-"):
            shutil.rmtree(self.vm(), ignore_errors=True)
        if self.tunnel is not None:
            self.tunnel.kill()
            self.tunnel.wait(timeout=10)
        if self.proxy:  # its route (Caddy drops it at the next config load)
            self.proxy.path(f"apps/{self.project}.json").unlink(missing_ok=True)


# --------------------------------------------------------------------------- the proxy


@dataclass
class Proxy:
    """A Caddy of our own on a sandbox VM: its own directory, network and ports, so it never
    touches another test session's (or a real) proxy. Its HTTP port listens on the VM's
    address, where users' requests come."""

    image: str
    machine: Vm
    tls: str = "off"
    proxy_dir: str = field(default_factory=lambda: f"/srv/.{unique('dp-')}")
    network: str = field(default_factory=lambda: unique("dpnet-"))
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)

    def settings(self) -> dict[str, str]:
        return {
            "DEPLOY_PROXY_DIR": self.proxy_dir,
            "DEPLOY_PROXY_NETWORK": self.network,
            "DEPLOY_PROXY_IMAGE": self.image,
            "DEPLOY_PROXY_TLS": self.tls,
            "DEPLOY_PROXY_HTTP_PORT": str(self.http_port),
            "DEPLOY_PROXY_HTTPS_PORT": str(self.https_port),
        }

    @property
    def project(self) -> str:
        return project_name(self.proxy_dir)

    def path(self, relative: str) -> Path:
        """The laptop-side path of a file in proxy_dir on the VM."""
        return self.machine.host_path(self.proxy_dir) / relative

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.machine.docker(*args))

    def has_image(self) -> bool:
        return self.docker("image", "inspect", self.image).returncode == 0

    def caddy_ids(self) -> list[str]:
        return self.docker("ps", "-q", "--filter",
                           f"label=com.docker.compose.project={self.project}").stdout.split()

    def tear_down(self) -> None:
        label = f"label=com.docker.compose.project={self.project}"
        ids = self.docker("ps", "-aq", "--filter", label).stdout.split()
        if ids:
            self.docker("rm", "--force", "--volumes", *ids)
        for _ in range(20):  # the engine may still hold a removed container's endpoint
            gone = self.docker("network", "rm", self.network)
            if gone.returncode == 0 or "not found" in gone.stderr:
                break
            time.sleep(0.5)
        if Path(self.proxy_dir).name.startswith(".dp-"):
            shutil.rmtree(self.path(""), ignore_errors=True)


@dataclass
class Hit:
    started: float
    ended: float
    status: int | str  # the HTTP status, or the error when there was no answer
    version: str = ""
    retry_after: str = ""  # an error's Retry-After header (a 503 of maintenance mode)
    body: str = ""  # an error's body (its start)


class Probe:
    """GET `path` at `rate` requests/s from a thread until stopped (at most `limit` s),
    each on a new connection, as users' requests come: what failed, which versions answered."""

    def __init__(self, app: App, path: str = "/version", rate: float = 100,
                 limit: float = 240) -> None:
        self.app, self.path, self.rate, self.limit = app, path, rate, limit
        self.hits: list[Hit] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        begin = time.monotonic()
        n = 0
        while not self._stop.is_set() and time.monotonic() - begin < self.limit:
            slot = begin + n / self.rate
            n += 1
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.hits.append(fetch(self.app, self.path, timeout=10))

    @property
    def failed(self) -> list[Hit]:
        return [h for h in self.hits if h.status != 200]

    def versions(self) -> list[str]:
        """The versions that answered, in order, repeats folded: ['1', '2'] for one switch."""
        out: list[str] = []
        for hit in self.hits:
            if hit.status == 200 and (not out or out[-1] != hit.version):
                out.append(hit.version)
        return out

    def first(self, version: str) -> float:
        return next(h.started for h in self.hits if h.status == 200 and h.version == version)

    def summary(self) -> str:
        took = (self.hits[-1].ended - self.hits[0].started) if self.hits else 0
        return (f"{len(self.hits)} requests in {took:.1f}s, {len(self.failed)} failed "
                f"{[h.status for h in self.failed][:5]}, versions {self.versions()}")


def fetch(app: App, path: str, timeout: float = 10) -> Hit:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(app.request(path), timeout=timeout) as response:
            body = json.load(response)
            version = str(body.get("version")) if isinstance(body, dict) else ""  # /items: a list
            return Hit(started, time.monotonic(), response.status, version)
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(2000).decode(errors="replace")
        except (OSError, http.client.HTTPException) as cut:  # the status came, the body did not
            body = f"(body cut: {cut})"
        return Hit(started, time.monotonic(), exc.code,
                   retry_after=exc.headers.get("Retry-After") or "", body=body)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # IncompleteRead: cut off
        return Hit(started, time.monotonic(), f"{type(exc).__name__}: {exc}")


class InFlight:
    """Start a GET of /slow?seconds=`seconds` every `every` s (at most `count`) while the
    block runs; each one's answer is kept (every one must end with 200)."""

    def __init__(self, app: App, seconds: float = 5, every: float = 1, count: int = 60) -> None:
        self.app, self.seconds, self.every, self.count = app, seconds, every, count
        self.hits: list[Hit] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._starter = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> InFlight:
        self._starter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._starter.join(timeout=30)
        for thread in self._threads:
            thread.join(timeout=self.seconds + 30)

    def _one(self) -> None:
        self.hits.append(fetch(self.app, f"/slow?seconds={self.seconds:g}",
                               timeout=self.seconds + 30))

    def _run(self) -> None:
        while not self._stop.is_set() and len(self._threads) < self.count:
            thread = threading.Thread(target=self._one, daemon=True)
            thread.start()
            self._threads.append(thread)
            self._stop.wait(self.every)
