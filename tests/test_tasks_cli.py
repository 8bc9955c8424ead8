"""The `inv` command line as a user meets it: task list, `inv test` pass-through and exit codes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, child_env, output

TASKS = ("init", "lock", "check", "test", "build", "smoke", "push", "deploy", "config")
REPO_ONLY = ("sandbox", "demo")  # this repo's tasks.py adds them; the package does not ship them


def test_inv_list_names_every_task_with_its_help(example_repo: Path, inv) -> None:
    proc = inv(example_repo, "--list")
    assert proc.returncode == 0
    for name in TASKS:
        assert f"\n  {name} " in proc.stdout, name
    assert "Preflight" in proc.stdout
    for name in REPO_ONLY:
        assert f"\n  {name} " not in proc.stdout, name


def test_this_repos_tasks_add_sandbox_and_demo(inv) -> None:
    proc = inv(REPO, "--list")
    assert proc.returncode == 0, output(proc)
    for name in (*TASKS, *REPO_ONLY):
        assert f"\n  {name} " in proc.stdout, name


@pytest.mark.slow
def test_installed_package_has_no_sandbox(tmp_path: Path) -> None:
    """A non-editable `pip install` of the package plus a one-line tasks.py: only deploy tasks,
    and no root-filesystem builder in what was installed."""
    src, site = tmp_path / "src", tmp_path / "site"  # built from a copy: no build/ in the repo
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "example"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )
    assert build.returncode == 0, output(build)
    installed = sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info"))
    assert installed == ["bin", "deploy"], installed
    assert [p.name for p in (site / "bin").iterdir()] == ["deploy-init"]
    shipped = "".join(p.read_text() for p in (site / "deploy").rglob("*.py"))
    assert "debootstrap" not in shipped and "dockerd" not in shipped
    app = tmp_path / "app"
    app.mkdir()
    (app / "tasks.py").write_text("from deploy.cli.tasks import ns  # noqa: F401\n")
    env = child_env({"PYTHONPATH": str(site)})
    where = subprocess.run([sys.executable, "-c", "import deploy; print(deploy.__file__)"],
                           cwd=app, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site)), where.stdout  # the installed copy, not the repo
    proc = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=app, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, output(proc)
    for name in TASKS:
        assert f"\n  {name} " in proc.stdout, name
    for name in REPO_ONLY:
        assert f"\n  {name} " not in proc.stdout, name


def test_inv_test_runs_the_apps_tests(example_repo: Path, inv) -> None:
    proc = inv(example_repo, "test")
    assert proc.returncode == 0, output(proc)
    assert " passed" in proc.stdout


def test_inv_test_passes_arguments_and_keeps_pytest_exit_code(example_repo: Path, inv) -> None:
    selected = inv(example_repo, "test", "--", "-k", "health", "-q")
    assert selected.returncode == 0, output(selected)
    assert "deselected" in selected.stdout
    nothing = inv(example_repo, "test", "--args=-k no_such_test_anywhere")
    assert nothing.returncode == 5  # pytest's "no tests collected", preserved
    assert "tests failed (exit 5)" in nothing.stderr


def test_inv_test_fails_with_a_failing_test(example_repo: Path, inv) -> None:
    (example_repo / "tests" / "test_broken.py").write_text("def test_x():\n    assert 1 == 2\n")
    subprocess.run(["git", "add", "-A"], cwd=example_repo, check=True)
    proc = inv(example_repo, "test")
    assert proc.returncode == 1
    assert "1 failed" in proc.stdout
    assert "Traceback (most recent call last)" not in proc.stderr


def test_deploy_refuses_a_dirty_tree_without_allow_dirty(example_repo: Path, inv) -> None:
    (example_repo / "app" / "extra.py").write_text("X = 1\n")
    proc = inv(example_repo, "deploy", "--dry-run")
    assert proc.returncode == 1
    assert "uncommitted change" in proc.stderr and "--allow-dirty" in proc.stderr
    dry = inv(example_repo, "deploy", "--dry-run", "--allow-dirty", "--skip-tests")
    assert dry.returncode == 0, output(dry)
    assert "-dirty-" in dry.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args", [("deploy", "--help"), ("exec", "-h"), ("env", "set", "--help")])
def test_a_tasks_help_after_its_name_shows_the_help_and_runs_nothing(tmp_path: Path, args) -> None:
    """Invoke gives `--help` after a task's name to the task's positional argument (the tag,
    the command); it shows the task's help instead, and nothing connects to a VM."""
    (tmp_path / "fabfile").mkdir()
    (tmp_path / "fabfile/__init__.py").write_text("from deploy.cli.fabtasks import ns  # noqa\n")
    proc = subprocess.run([sys.executable, "-m", "fabric", *args], cwd=tmp_path,
                          env=child_env({"DEPLOY_HOST": "vm.invalid"}), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, output(proc)
    # (the program's name under `python -m fabric` is Invoke's: __main__.py)
    assert re.match(rf"Usage: \S+ \[--core-opts\] {args[0]} \[--options\]", proc.stdout), \
        proc.stdout
    assert "Docstring:" in proc.stdout and "Options:" in proc.stdout
    assert "error" not in output(proc) and "vm.invalid" not in output(proc)
