"""The embedded example app: its own test suite, and the Alembic drift checks
the toolkit relies on (v1 clean, v2 overlay clean, model without migration fails)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example"


# each test runs the app's tools (Alembic, uv, pytest) in subprocesses: seconds each
pytestmark = pytest.mark.slow


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


# The Alembic checks need only sqlalchemy + alembic (env.py does not import FastAPI);
# the example's own suite needs the whole app plus httpx.
needs_alembic = pytest.mark.skipif(
    bool(_missing("sqlalchemy", "alembic")),
    reason=f"not installed: {', '.join(_missing('sqlalchemy', 'alembic'))}",
)
needs_app_deps = pytest.mark.skipif(
    bool(_missing("fastapi", "sqlalchemy", "alembic")),
    reason="the example app's dependencies are not installed (example/requirements.lock)",
)


_IGNORE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".pytest_cache", "data", "*.db", ".env", "app.env"
)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "APP_FAIL_HEALTH")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def _copy_example(dest: Path, *, v2: bool = False, v2_files=()) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=_IGNORE)
    shutil.rmtree(dest / "v2")
    if v2:
        shutil.copytree(EXAMPLE / "v2", dest, dirs_exist_ok=True, ignore=_IGNORE)
    for rel in v2_files:
        shutil.copy2(EXAMPLE / "v2" / rel, dest / rel)
    return dest


def _alembic(tree: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", *args],
        cwd=tree,
        env=_clean_env(DATABASE_URL=f"sqlite:///{tree / 'data' / 'app.db'}"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_app_deps
def test_example_own_test_suite_passes():
    if importlib.util.find_spec("httpx") is None and importlib.util.find_spec("httpx2") is None:
        pytest.skip("httpx is not installed (example/requirements-dev.txt)")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout


@needs_alembic
def test_v1_migrations_match_models(tmp_path):
    tree = _copy_example(tmp_path / "v1")
    up = _alembic(tree, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert (tree / "data" / "app.db").is_file()
    check = _alembic(tree, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


@needs_alembic
def test_v2_overlay_migrates_and_matches_models(tmp_path):
    tree = _copy_example(tmp_path / "v2", v2=True)
    assert 'version__ = "2"' in (tree / "app" / "__init__.py").read_text()
    up = _alembic(tree, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    check = _alembic(tree, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    current = _alembic(tree, "current")
    assert "0002" in current.stdout, current.stdout + current.stderr
    # The downgrade works too, and upgrading again is clean.
    down = _alembic(tree, "downgrade", "0001")
    assert down.returncode == 0, down.stderr
    again = _alembic(tree, "upgrade", "head")
    assert again.returncode == 0, again.stderr


@needs_alembic
def test_v2_upgrade_from_v1_database(tmp_path):
    """A database made by v1 is upgraded by v2 (the deploy path)."""
    v1 = _copy_example(tmp_path / "v1")
    assert _alembic(v1, "upgrade", "head").returncode == 0
    v2 = _copy_example(tmp_path / "v2", v2=True)
    (v2 / "data").mkdir()
    shutil.copy2(v1 / "data" / "app.db", v2 / "data" / "app.db")
    up = _alembic(v2, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert "0001 -> 0002" in up.stderr
    assert _alembic(v2, "check").returncode == 0


@needs_alembic
def test_model_change_without_migration_fails_check(tmp_path):
    tree = _copy_example(tmp_path / "drift", v2_files=["app/models.py"])
    up = _alembic(tree, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    check = _alembic(tree, "check")
    assert check.returncode != 0, check.stdout + check.stderr
    assert "note" in check.stdout + check.stderr


@pytest.mark.parametrize("example", ["example", "example-postgres"])
@pytest.mark.parametrize("status, code", [(200, 0), (500, 1), (503, 1)])
def test_the_health_check_script_exits_0_only_on_a_200(example, status, code):
    """The examples' Docker health check (`python -I -S healthcheck.py URL`), against a real
    HTTP server on loopback: exit 0 on a 200 answer to the path it names, 1 otherwise."""
    import http.server
    import threading

    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        done = subprocess.run([sys.executable, "-I", "-S", str(REPO / example / "healthcheck.py"),
                               url], capture_output=True, text=True, timeout=10)
        server.shutdown()
    assert (done.returncode, asked) == (code, ["/health"]), done.stderr
    assert done.stdout == ("" if code == 0 else f"{url}: answered {status}\n")


def test_the_health_check_script_fails_when_nothing_listens():
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-I", "-S", str(EXAMPLE / "healthcheck.py"),
                           f"http://127.0.0.1:{port}/health"], capture_output=True, text=True,
                          timeout=10)
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout == f"http://127.0.0.1:{port}/health: [Errno 111] Connection refused\n"
