"""Fixtures for the local half (`inv` tasks): a throwaway git copy of the example app, a way to
run `inv` in it, and the Docker engine / registry / base image the slow tests need."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # vmkit imports this module (see below); the sandbox's types only
    from _pytest.terminal import TerminalReporter
    from vmkit import App, Images, SshdLog

    from sandbox import Sandbox
    from sandbox.vms import Vm

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example"
EXAMPLE_POSTGRES = REPO / "example-postgres"
REGISTRY = "127.0.0.1:5000"
BASE_IMAGE = "python:3.11-slim"

_IGNORE = shutil.ignore_patterns(
    "v2", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "data", "*.db",
    "*.db-journal", ".env", "app.env", ".venv",
)

ENV_VALUES = {
    "APP_SECRET": "test-secret",
    "MODEL_NAME": "test-model",
    "APP_PORT": "8000",
}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; its stdout (a failure fails the test with git's message)."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"git {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout.strip()


def commit_all(repo: Path, message: str = "change") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_example_repo(dest: Path, source: Path = EXAMPLE) -> Path:
    """Copy the example app (v1 only) to `dest`, add .env and tasks.py, commit it all."""
    shutil.copytree(source, dest, ignore=_IGNORE)
    lines = []
    for line in (dest / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if line and not line.startswith("#") and "=" in line:
            lines.append(f"{key}={ENV_VALUES.get(key, 'test-value')}")
    (dest / ".env").write_text("\n".join(lines) + "\n")
    (dest / "tasks.py").write_text("from deploy.tasks import ns  # noqa: F401\n")
    # The example's development environment: its requirements are in the toolkit's own venv,
    # so that venv stands in as the app's .venv (where the migrations check runs Alembic).
    (dest / ".venv").symlink_to(Path(sys.executable).parent.parent)
    gitignore = dest / ".gitignore"
    ignored = gitignore.read_text().splitlines() if gitignore.exists() else []
    for name in (".env", ".venv"):
        if name not in ignored:
            ignored.append(name)
    gitignore.write_text("\n".join(ignored) + "\n")
    git(dest, "init", "-q")
    git(dest, "config", "user.email", "tests@example.invalid")
    git(dest, "config", "user.name", "Deploy Tests")
    git(dest, "config", "commit.gpgsign", "false")
    commit_all(dest, "example app")
    assert git(dest, "status", "--porcelain", "--untracked-files=all") == "", "copy is not clean"
    return dest


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A committed, clean git copy of example/ (without v2/) with a filled-in .env."""
    return make_example_repo(tmp_path / "app")


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for an `inv` child: ours minus DEPLOY_* settings, plus `env`.

    The venv's bin directory goes first on PATH, as if the venv were activated.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("DEPLOY_") and not k.startswith("DEPLOY_SANDBOX_"))
    }
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    base.update(env or {})
    return base


def run_inv(
    repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`python -m invoke ARGS` in `repo`, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=repo,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def inv(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `inv` in an app repo. The smoke-test record goes to this test's own cache dir."""
    cache = tmp_path / "xdg-cache"

    def _inv(repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900
             ) -> subprocess.CompletedProcess[str]:
        return run_inv(repo, *args, env={"XDG_CACHE_HOME": str(cache), **(env or {})},
                       timeout=timeout)

    return _inv


@contextlib.contextmanager
def answering_200() -> Iterator[int]:
    """A local HTTP server that answers 200 to every GET, for the block; yields its port."""
    import http.server
    import threading

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    text = output(proc)
    assert "Traceback" not in text, text
    assert not [line for line in text.splitlines() if 'File "' in line and "deploy/" in line]


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def docker_cli() -> str:
    path = shutil.which("docker")
    if not path:
        pytest.skip("the docker CLI is not installed (CI installs it with .ci/setup)")
    return path


@pytest.fixture(scope="session")
def docker_engine(docker_cli: str) -> None:
    try:
        proc = _docker("info", "--format", "{{.ServerVersion}}")
    except subprocess.TimeoutExpired:
        pytest.skip("`docker info` hung for 60s: the Docker engine is not answering")
    if proc.returncode != 0:
        pytest.skip(
            "no Docker engine answers `docker info` (start it: python -m sandbox up): "
            + (proc.stderr.strip().splitlines() or ["no output"])[-1]
        )


@pytest.fixture(scope="session")
def registry(docker_engine: None) -> str:
    url = f"http://{REGISTRY}/v2/"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        pytest.skip(f"no registry answers {url} ({exc}); start it: python -m sandbox up")
    if status != 200:
        pytest.skip(f"the registry at {url} answered {status}, not 200")
    return REGISTRY


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    if _docker("image", "inspect", BASE_IMAGE).returncode != 0:
        pytest.skip(
            f"base image {BASE_IMAGE} is not in the local engine (no Docker Hub from here); "
            "python -m sandbox up loads it"
        )
    return BASE_IMAGE


# --------------------------------------------------------------------------- fault campaign


def pytest_terminal_summary(terminalreporter: TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """The fault campaign's table (tests/test_faults.py), when it recorded rows; also written
    as Markdown to $FAULTS_REPORT if that is set."""
    kit = sys.modules.get("faultkit")
    if kit is None or not kit.RESULTS:
        return
    terminalreporter.section("fault campaign")
    for line in kit.table_text().splitlines():
        terminalreporter.write_line(line)
    report = os.environ.get("FAULTS_REPORT")
    if report:
        Path(report).write_text(kit.table_markdown())
        terminalreporter.write_line(f"(written to {report})")


# --------------------------------------------------------------------------- the sandbox VM
# Shared by tests/test_remote.py and tests/test_faults.py: the example images are built and
# pushed once per session. vmkit imports this module, so it is imported lazily here.


# VMs 1 and 2 serve every remote test (other test runs may use them at the same time); VMs 3
# and 4 are for the tests that kill a VM's engine or sshd (the fault campaign, multi-host).
SHARED_VMS = (1, 2)
FAULT_VMS = (3, 4)


@pytest.fixture(scope="session")
def sandbox(registry: str, base_image: str) -> Sandbox:
    """The sandbox up (idempotent): engine, registry, images, sshd, VMs 1 and 2."""
    import sandbox as sandbox_mod

    return sandbox_mod.up(vms=max(SHARED_VMS))


@pytest.fixture(scope="session")
def vm1(sandbox: Sandbox) -> Vm:
    """The VM remote tests deploy to by default."""
    return sandbox.vm(SHARED_VMS[0])


@pytest.fixture(scope="session")
def two_vms(sandbox: Sandbox) -> tuple[Vm, ...]:
    """Two separate VMs, for multi-host tests that do not break them."""
    return tuple(sandbox.vm(i) for i in SHARED_VMS)


@pytest.fixture(scope="session")
def fault_vms(sandbox: Sandbox) -> tuple[Vm, ...]:
    """Two VMs of their own for tests that kill a VM's engine or sshd."""
    import sandbox as sandbox_mod

    sandbox_mod.up(vms=max(FAULT_VMS))
    return tuple(sandbox.vm(i) for i in FAULT_VMS)


@pytest.fixture(scope="session")
def images(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    from vmkit import build_images, delete_from_registry, remove_local_images

    from sandbox.vms import running

    built = build_images(tmp_path_factory.mktemp("images"))
    yield built
    remove_local_images(built.image)
    for vm in running(sandbox.state_dir):  # what the VMs pulled
        remove_local_images(built.image, vm)
    delete_from_registry(built.name)


@pytest.fixture(scope="session")
def sshd(vm1: Vm) -> SshdLog:
    """The log of vm1's sshd."""
    from vmkit import SshdLog

    return SshdLog(vm1.log("sshd"))


@pytest.fixture
def make_app(tmp_path: Path, images: Images, sandbox: Sandbox, vm1: Vm
             ) -> Iterator[Callable[..., App]]:
    """Make apps (a repo each, with its own app_dir and port, on vm1 unless `vm` says another);
    each torn down afterwards."""
    from vmkit import App, make_app_repo

    apps: list[App] = []

    def _make(image: str = "", vm: Vm | None = None) -> App:
        repo = make_app_repo(tmp_path / f"app{len(apps)}")
        app = App.create(repo, images, tmp_path / "xdg-cache", sandbox, image=image,
                         vm=vm or vm1)
        apps.append(app)
        return app

    yield _make
    for app in apps:
        app.tear_down()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


@pytest.fixture
def live(app: App, images: Images) -> App:
    """An app set up on the VM with v1 deployed."""
    app.fab_ok("setup")
    app.deploy(images.v1)
    assert app.version() == {"version": "1", "revision": "0001"}
    return app
