"""Fixtures for the local half (`inv` tasks): a throwaway git copy of the example app, a way to
run `inv` in it, and the Docker engine / registry / base image the slow tests need."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import tiers

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
PG_BASE_IMAGE = "pgvector/pgvector:pg17"

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


def make_example_repo(dest: Path, source: Path = EXAMPLE, fabfile: bool = False) -> Path:
    """Copy the example app (v1 only) to `dest`, add .env and tasks.py (and fabfile/), commit
    it all."""
    from sandbox.apprepo import make_app_repo

    keys = [line.split("=", 1)[0].strip() for line in (source / ".env.example").read_text()
            .splitlines() if line and not line.startswith("#") and "=" in line]
    make_app_repo(dest, source, {key: ENV_VALUES.get(key, "test-value") for key in keys},
                  fabfile=fabfile)
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
def http_serving(handler: type) -> Iterator[int]:
    """A local HTTP server answering with `handler` (a BaseHTTPRequestHandler), for the
    block; yields its port."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def answering_200() -> Iterator[int]:
    """A local HTTP server that answers 200 to every GET, for the block; yields its port."""
    import http.server

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http_serving(Ok) as port:
        yield port


@contextlib.contextmanager
def answering_raw(reply: bytes) -> Iterator[int]:
    """A local TCP port that reads each connection's request, sends `reply` as it is (not
    necessarily HTTP) and closes, for the block; yields the port."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


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


# --------------------------------------------------------------------------- tiers


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tier", default=os.environ.get("DEPLOY_TEST_TIER", "fast"),
        help="which tiers run: a comma-separated list of " + ", ".join(tiers.TIERS)
        + ", or all (default: fast, or $DEPLOY_TEST_TIER). A test's tier comes from the "
        "fixtures it uses (tests/tiers.py).")


def pytest_configure(config: pytest.Config) -> None:
    try:
        tiers.parse_tiers(config.getoption("--tier"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    for name in tiers.TIERS[1:]:
        config.addinivalue_line("markers", f"{name}: the {name} tier (tests/tiers.py)")
    # xdist would hand out groups by their number of tests: a module of 60 quick tests before
    # one release cycle of three minutes (see pytest_collection_modifyitems).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark each test with its tier and xdist group as it is collected: xdist's worker reads
    the group in its own pytest_collection_modifyitems, which may run before ours."""
    fixtures = getattr(item, "fixturenames", ())
    tier = tiers.tier_of(fixtures, item.get_closest_marker("slow") is not None)
    if tier not in ("fast", "slow"):
        item.add_marker(getattr(pytest.mark, tier))
    if item.get_closest_marker("xdist_group") is None:
        item.add_marker(pytest.mark.xdist_group(
            tiers.group_of(fixtures, item.nodeid.split("::")[0])))
    item.user_properties.append(("tier", tier))
    marker = item.get_closest_marker("xdist_group")
    group = (marker.args[0] if marker.args else marker.kwargs.get("name")) if marker else "-"
    item.user_properties.append(("group", str(group)))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the tiers asked for, the costliest groups first."""
    wanted = config.getoption("--tier")
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    kept: list[tuple[str, str]] = []  # each kept test's (group, tier)
    for item in items:
        properties = dict(item.user_properties)
        tier = str(properties.get("tier", "fast"))
        if tiers.selected(tier, wanted):
            keep.append(item)
            kept.append((str(properties.get("group", "-")), tier))
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    # xdist takes groups in this order (pytest_configure turns its own reordering, by number of
    # tests, off): the longest groups start first and the short ones fill in around them.
    items[:] = [keep[i] for i in tiers.heaviest_first(kept)]


# per tier: first start, last stop, summed duration, tests run (this process's reports: with
# xdist, the controller's are every worker's)
_TIMES: dict[str, list[float]] = {}
# per xdist group (one worker runs a group's tests one after another): summed duration
_GROUP_TIMES: dict[str, float] = {}
# per test module: summed duration (where the suite's work goes)
_MODULE_TIMES: dict[str, float] = {}
_TEST_TIMES: dict[str, float] = {}
# the node ids of the tests that failed (setup, call or teardown), as a plain run takes them
_FAILED: list[str] = []
# the fault campaign's rows, carried from the worker that made them in the test's report
_FAULT_ROWS: list[dict[str, Any]] = []
_ROWS_SENT = [0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    kit = sys.modules.get("faultkit")
    if kit is not None:
        for row in kit.RESULTS[_ROWS_SENT[0]:]:
            item.user_properties.append(("fault_row", dataclasses.asdict(row)))
        _ROWS_SENT[0] = len(kit.RESULTS)
    yield


# A test phase (set-up, call, tear-down) longer than this is stopped with every thread's
# stack in its failure, so that a test that waits forever fails alone instead of holding the
# run until CI's own limit. The longest take 3 minutes; the first set-up builds the images.
PHASE_LIMIT = 1200.0


def _stop_the_phase(limit: float) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        import threading
        import traceback

        names = {t.ident: t.name for t in threading.enumerate()}
        stacks = [f"-- thread {names.get(ident, ident)}\n" + "".join(traceback.format_stack(f))
                  for ident, f in sys._current_frames().items()]
        pytest.fail(f"still running after {limit:g} s: stopped. Every thread's stack:\n"
                    + "\n".join(stacks), pytrace=False)
    return handler


@contextlib.contextmanager
def phase_limit(limit: float = PHASE_LIMIT) -> Iterator[None]:
    """The block fails (pytest.fail, with every thread's stack) if it runs over `limit`
    seconds; a limit already running around it goes on afterwards."""
    import signal
    import threading
    import time

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _stop_the_phase(limit))
    outer, _ = signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 0.01))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with phase_limit():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with phase_limit():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with phase_limit():
        yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    properties = dict(report.user_properties)
    tier = properties.get("tier")
    if tier is not None:
        start, stop, total, count = _TIMES.setdefault(str(tier),
                                                      [report.start, report.stop, 0.0, 0])
        _TIMES[str(tier)] = [min(start, report.start), max(stop, report.stop),
                             total + report.duration, count + (report.when == "call")]
        group = str(properties.get("group", "-"))
        _GROUP_TIMES[group] = _GROUP_TIMES.get(group, 0.0) + report.duration
        module = report.nodeid.split("::", 1)[0]
        _MODULE_TIMES[module] = _MODULE_TIMES.get(module, 0.0) + report.duration
        nodeid = report.nodeid.removesuffix(f"@{group}")
        _TEST_TIMES[nodeid] = _TEST_TIMES.get(nodeid, 0.0) + report.duration
        if report.failed:  # (xdist's loadgroup adds "@GROUP" to the node id)
            if nodeid not in _FAILED:
                _FAILED.append(nodeid)
    if report.when == "call" or report.when == "teardown":
        for key, value in report.user_properties:
            if key == "fault_row" and isinstance(value, dict) and value not in _FAULT_ROWS:
                _FAULT_ROWS.append(value)


def tier_times(times: dict[str, list[float]]) -> list[str]:
    """One line per tier: tests run, the wall time from its first start to its last stop, and
    the sum of its tests' own times (more than the wall time when workers ran it side by
    side)."""
    lines = []
    for tier in sorted(times, key=tiers.TIERS.index):
        start, stop, total, count = times[tier]
        lines.append(f"{tier:<8} {int(count):>4} tests  {stop - start:7.1f}s wall  "
                     f"{total:7.1f}s summed")
    return lines


# --------------------------------------------------------------------------- fault campaign


def pytest_terminal_summary(terminalreporter: TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """The time per tier; the fault campaign's table (tests/test_faults.py), when it recorded
    rows, also written as Markdown to $FAULTS_REPORT if that is set."""
    failed_file = os.environ.get("FAILED_TESTS_FILE")
    if failed_file and not hasattr(config, "workerinput"):  # for .ci/run's second try
        Path(failed_file).write_text("".join(f"{nodeid}\n" for nodeid in _FAILED))
    if _TIMES and not hasattr(config, "workerinput"):
        terminalreporter.section("time per tier")
        for line in tier_times(_TIMES):
            terminalreporter.write_line(line)
        if len(_GROUP_TIMES) > 1:
            # the longest group bounds the whole run's wall time from below
            longest = sorted(_GROUP_TIMES.items(), key=lambda kv: -kv[1])[:6]
            terminalreporter.write_line("longest xdist groups (each on one worker): " + ", ".join(
                f"{group} {seconds:.0f}s" for group, seconds in longest))
            # the suite's wall time is at least its summed time over the workers: this is
            # where that sum goes
            heaviest = sorted(_MODULE_TIMES.items(), key=lambda kv: -kv[1])[:10]
            terminalreporter.write_line("heaviest modules (summed): " + ", ".join(
                f"{module.removeprefix('tests/')} {seconds:.0f}s"
                for module, seconds in heaviest))
            heaviest = sorted(_TEST_TIMES.items(), key=lambda kv: -kv[1])[:12]
            terminalreporter.write_line("heaviest tests (set-up included): " + ", ".join(
                f"{nodeid.removeprefix('tests/')} {seconds:.0f}s" for nodeid, seconds in heaviest))
    if not _FAULT_ROWS:
        return
    import faultkit as kit

    kit.RESULTS[:] = [kit.Row(**row) for row in _FAULT_ROWS]
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
PG_FAULT_VM = 8
SSHD_VM = 9


@pytest.fixture(scope="session")
def sandbox(registry: str, base_image: str) -> Sandbox:
    """The sandbox up (idempotent): engine, registry, images, sshd, VMs 1 and 2."""
    return sandbox_up(*SHARED_VMS)


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
    sandbox_up(*FAULT_VMS)
    return tuple(sandbox.vm(i) for i in FAULT_VMS)


@pytest.fixture(scope="session")
def pg_fault_vm(sandbox: Sandbox) -> Vm:
    """A VM of its own for the fault campaign on the Postgres example, which runs beside the
    one on SQLite (vm3, and vm4 for the multi-VM faults)."""
    sandbox_up(PG_FAULT_VM)
    return sandbox.vm(PG_FAULT_VM)


@pytest.fixture(scope="session")
def images(sandbox: Sandbox, request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Images:
    """The example's v1, v2, broken-migration and unhealthy images, pushed: built once per
    run, by the first worker that needs them."""
    from vmkit import build_images

    return shared_build(request, tmp_path_factory, "images",
                        lambda root: build_images(root, EXAMPLE, "rt-"))


@pytest.fixture(scope="session")
def pg_images(sandbox: Sandbox, request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Images:
    """The same images of example-postgres/, built once per run."""
    from vmkit import build_images

    if _docker("image", "inspect", PG_BASE_IMAGE).returncode != 0:
        pytest.skip(f"{PG_BASE_IMAGE} is not in the engine: `python -m sandbox up` builds it")
    return shared_build(request, tmp_path_factory, "pg-images",
                        lambda root: build_images(root, EXAMPLE_POSTGRES, "rt-pg-"))


def run_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory every xdist worker of this run shares (the controller's basetemp)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(request.config, "workerinput") else base


def shared_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 key: str, build: Callable[[Path], Any]) -> Any:
    """Images built once per test run: the first worker builds and records them (under a
    lock), the others read the record. The run's end removes them (pytest_sessionfinish)."""
    from vmkit import Images

    root = run_root(request, tmp_path_factory)
    record = root / f"shared-{key}.json"
    with open(root / f"shared-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists():
            return Images(**json.loads(record.read_text()))
        built = build(root / f"shared-{key}")
        record.write_text(json.dumps(dataclasses.asdict(built)))
        return built


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run's shared images removed from the registry, the laptop and the VMs (by the
    controller, once every worker is done)."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    records = sorted(factory.getbasetemp().glob("shared-*.json")) if factory else []
    if not records:
        return
    from vmkit import Images, delete_from_registry, remove_local_images

    import sandbox as sandbox_mod
    from sandbox.vms import running

    box = sandbox_mod.sandbox()
    for record in records:
        built = Images(**json.loads(record.read_text()))
        remove_local_images(built.image)
        for vm in running(box.state_dir):  # what the VMs pulled
            remove_local_images(built.image, vm)
        delete_from_registry(built.name)


def sandbox_up(*vms: int) -> Sandbox:
    """The sandbox with the VMs `vms` up (idempotent), and no other VM started: another
    worker's fault test may have stopped one on purpose."""
    import sandbox as sandbox_mod

    return sandbox_mod.up(only=vms)


@pytest.fixture(scope="session")
def sshd_vm(sandbox: Sandbox) -> Vm:
    """The VM of the tests that count SSH connections in its sshd's log: theirs alone (they
    run one after another on one worker), so that nobody else's logins are counted."""
    sandbox_up(SSHD_VM)
    return sandbox.vm(SSHD_VM)


@pytest.fixture(scope="session")
def sshd(sshd_vm: Vm) -> SshdLog:
    """The log of the sshd of the VM a test's apps go to (`make_app`)."""
    from vmkit import SshdLog

    return SshdLog(sshd_vm.log("sshd"))


@pytest.fixture
def make_app(tmp_path: Path, images: Images, sandbox: Sandbox, vm1: Vm,
             request: pytest.FixtureRequest) -> Iterator[Callable[..., App]]:
    """Make apps (a repo each, with its own app_dir and port, on vm1 unless `vm` says another,
    or the sshd VM for a test that counts SSH connections); each torn down afterwards."""
    from vmkit import App, make_app_repo

    apps: list[App] = []

    def _make(image: str = "", vm: Vm | None = None) -> App:
        if vm is None:
            vm = request.getfixturevalue("sshd_vm") if "sshd" in request.fixturenames else vm1
        repo = make_app_repo(tmp_path / f"app{len(apps)}")
        app = App.create(repo, images, tmp_path / "xdg-cache", sandbox, image=image, vm=vm)
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
