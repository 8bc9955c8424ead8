"""`inv lock`: real pip-compile (and uv) against PyPI; the lock is hashed, stamped, and free of
this machine's pip configuration (which adds extra-index-url and find-links here)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLE, assert_no_traceback, output

from deploy.core.settings import load_settings
from deploy.local import pins as pinning

REQUIREMENTS = "six\nidna\n"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "lockapp"
    root.mkdir()
    (root / "requirements.txt").write_text(REQUIREMENTS)
    (root / "tasks.py").write_text("from deploy.cli.tasks import ns  # noqa: F401\n")
    return root


@pytest.fixture
def locked(app: Path, inv) -> Path:
    proc = inv(app, "lock")
    assert proc.returncode == 0, output(proc)
    return app


def pins(text: str) -> set[str]:
    return {f"{pinning.normalize_name(n)}=={v}" for n, v in PIN.findall(text)}


def test_lock_writes_stamped_hashed_lock_without_machine_index_options(locked):
    text = (locked / "requirements.lock").read_text()
    lines = text.splitlines()
    assert pinning.STAMP_RE.match(lines[0]), lines[0]
    assert "python=3." in lines[0]
    assert {p.split("==")[0] for p in pins(text)} == {"six", "idna"}
    assert text.count("--hash=sha256:") >= 2
    for line in lines:
        stripped = line.strip()
        assert not stripped.startswith(("--extra-index-url", "--index-url", "--find-links", "-f ",
                                        "-i ", "--trusted-host")), line
        assert "file://" not in line, line
        assert "/opt/wheels" not in line, line
    assert str(locked) not in text  # no absolute paths of this machine in the lock


def test_lock_leaves_no_temp_files(locked):
    assert sorted(p.name for p in locked.iterdir()) == [
        "requirements.lock", "requirements.txt", "tasks.py"
    ]


def test_check_passes_when_fresh(locked, inv):
    proc = inv(locked, "lock", "--check")
    assert proc.returncode == 0, output(proc)
    assert "requirements.lock is fresh" in proc.stdout


def test_check_fails_after_requirements_change(locked, inv):
    (locked / "requirements.txt").write_text(REQUIREMENTS + "packaging\n")
    proc = inv(locked, "lock", "--check")
    assert proc.returncode == 1
    assert "error: requirements.txt changed since requirements.lock was made" in output(proc)
    assert "fix: run `inv lock`" in output(proc)
    assert_no_traceback(proc)


def test_check_ignores_comments_and_order(locked, inv):
    (locked / "requirements.txt").write_text("# a comment\nidna  # why\n\nsix\n")
    proc = inv(locked, "lock", "--check")
    assert proc.returncode == 0, output(proc)


def test_check_fails_when_a_requirement_is_missing_from_the_lock(locked, inv):
    path = locked / "requirements.lock"
    kept, skipping = [], False
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("idna=="):
            skipping = True
        elif line and not line[0].isspace():
            skipping = False
        if not skipping:
            kept.append(line)
    path.write_text("".join(kept))
    assert "idna" not in path.read_text()
    proc = inv(locked, "lock", "--check")
    assert proc.returncode == 1
    assert "requirements.lock lacks idna" in output(proc)


def test_check_fails_on_a_hand_added_index_option(locked, inv):
    path = locked / "requirements.lock"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "--extra-index-url file:///opt/pypi/simple\n" + "".join(lines[1:]))
    proc = inv(locked, "lock", "--check")
    assert proc.returncode == 1
    assert "machine-specific index" in output(proc)


def test_check_fails_without_a_lock_or_stamp(app, inv):
    proc = inv(app, "lock", "--check")
    assert proc.returncode == 1
    assert "requirements.lock does not exist" in output(proc)
    (app / "requirements.lock").write_text("six==1.17.0\nidna==3.10\n")
    proc = inv(app, "lock", "--check")
    assert proc.returncode == 1
    assert "no fingerprint line" in output(proc)


@pytest.mark.parametrize("bad", ["six==0.0.0.999", "no-such-package-deploy-toolkit-test-xq"])
def test_failed_resolution_keeps_the_old_lock(locked, inv, bad):
    before = (locked / "requirements.lock").read_bytes()
    (locked / "requirements.txt").write_text(REQUIREMENTS + bad + "\n")
    proc = inv(locked, "lock")
    assert proc.returncode != 0
    assert "requirements.lock is unchanged" in output(proc)
    assert (locked / "requirements.lock").read_bytes() == before
    assert sorted(p.name for p in locked.iterdir()) == [
        "requirements.lock", "requirements.txt", "tasks.py"
    ]


def test_missing_requirements_file_is_a_clear_error(tmp_path, inv):
    (tmp_path / "tasks.py").write_text("from deploy.cli.tasks import ns  # noqa: F401\n")
    proc = inv(tmp_path, "lock")
    assert proc.returncode == 1
    assert "requirements.txt does not exist" in output(proc)
    assert_no_traceback(proc)
    assert not list(tmp_path.glob(".requirements.lock.*"))


def test_upgrade_package_is_accepted(locked, inv):
    proc = inv(locked, "lock", "--upgrade-package", "six", "--upgrade-package", "idna",
               env={"DEPLOY_VERBOSE": "1"})  # -v: the resolver's command shown
    assert proc.returncode == 0, output(proc)
    assert "--upgrade-package six" in proc.stdout
    assert "--upgrade-package idna" in proc.stdout
    assert inv(locked, "lock", "--check").returncode == 0


def test_uv_backend_pins_the_same_versions_as_pip_tools(locked, inv, tmp_path):
    pip_tools = (locked / "requirements.lock").read_text()
    other = tmp_path / "uvapp"
    other.mkdir()
    (other / "requirements.txt").write_text(REQUIREMENTS)
    (other / "tasks.py").write_text("from deploy.cli.tasks import ns  # noqa: F401\n")
    proc = inv(other, "lock", env={"DEPLOY_LOCK_BACKEND": "uv"})
    assert proc.returncode == 0, output(proc)
    uv_text = (other / "requirements.lock").read_text()
    assert "(uv)" in uv_text.splitlines()[1]
    assert pins(uv_text) == pins(pip_tools)
    assert uv_text.count("--hash=sha256:") >= 2
    assert "file://" not in uv_text and "--extra-index-url" not in uv_text
    assert inv(other, "lock", "--check").returncode == 0


def test_the_example_lock_is_fresh():
    state = pinning.check_lock(load_settings(EXAMPLE, environ={}))
    assert state.fresh, f"{state.reason}; fix: cd example && ../.venv/bin/inv lock"


def test_uv_in_the_venv_is_found_without_activating_it(monkeypatch, tmp_path):
    venv_uv = Path(sys.executable).parent / "uv"
    if not venv_uv.exists():
        pytest.skip(f"uv is not installed next to {sys.executable}")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    assert pinning.find_uv() == str(venv_uv)
