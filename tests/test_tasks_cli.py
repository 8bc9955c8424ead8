"""The `inv` command line as a user meets it: task list, `inv test` pass-through and exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import output

TASKS = ("lock", "check", "test", "build", "smoke", "push", "deploy", "config", "sandbox", "demo")


def test_inv_list_names_every_task_with_its_help(example_repo: Path, inv) -> None:
    proc = inv(example_repo, "--list")
    assert proc.returncode == 0
    for name in TASKS:
        assert f"\n  {name} " in proc.stdout, name
    assert "Preflight" in proc.stdout


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
    assert "pytest exit 5" in nothing.stderr


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
