"""`inv check`: the five preflight checks pass on the example and each catches its own drift."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest import EXAMPLE, assert_no_traceback, commit_all, output

from deploy.core.errors import DeployError
from deploy.local import dockerfile
from deploy.local.checks.envcomplete import compose_variables

CHECKS = ["python-parity", "lock-fresh", "env-complete", "build-context", "migrations",
          "migrate-at-start", "git-clean"]
INSTALL_LOCK = "RUN pip install --no-cache-dir --require-hashes -r requirements.lock"


def check_json(inv, repo: Path) -> tuple[int, list[dict]]:
    proc = inv(repo, "check", "--json")
    assert_no_traceback(proc)
    return proc.returncode, json.loads(proc.stdout)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def assert_only_failure(inv, repo: Path, name: str) -> dict:
    """`inv check --json` fails (exit 1) on exactly `name`; the text output explains it."""
    code, results = check_json(inv, repo)
    assert [r["name"] for r in results] == CHECKS
    failing = [r for r in results if not r["ok"]]
    assert [r["name"] for r in failing] == [name], json.dumps(results, indent=1)
    assert code == 1
    result = failing[0]
    assert result["reason"] and result["fix"]

    proc = inv(repo, "check", "--only", name)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"FAIL {name}"), proc.stdout
    assert result["reason"] in lines[0]
    assert lines[1].strip() == f"fix: {result['fix']}"
    assert f"preflight failed: {name}" in proc.stderr
    assert_no_traceback(proc)
    return result


# --- the example passes --------------------------------------------------------------------


def test_check_passes_on_the_example(example_repo, inv):
    proc = inv(example_repo, "check")
    assert proc.returncode == 0, output(proc)
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", name] for name in CHECKS]
    assert_no_traceback(proc)


def test_check_json_on_the_example(example_repo, inv):
    code, results = check_json(inv, example_repo)
    assert code == 0
    assert len(results) == len(CHECKS)
    assert [r["name"] for r in results] == CHECKS
    assert all(r["ok"] for r in results), results
    # Running the checks leaves the app's tree clean (no __pycache__ from the Alembic probe).
    proc = inv(example_repo, "check", "--only", "git-clean")
    assert proc.returncode == 0, output(proc)


def test_only_and_skip_select_checks(example_repo, inv):
    proc = inv(example_repo, "check", "--only", "git-clean", "--only", "lock-fresh")
    assert proc.returncode == 0, output(proc)
    assert [line.split()[1] for line in proc.stdout.splitlines()] == ["lock-fresh", "git-clean"]
    proc = inv(example_repo, "check", "--skip", "migrations")
    assert proc.returncode == 0, output(proc)
    assert "migrations" not in proc.stdout


def test_unknown_check_name_is_an_error(example_repo, inv):
    proc = inv(example_repo, "check", "--only", "parity")
    assert proc.returncode == 1
    assert "error: no check named 'parity'" in proc.stderr
    assert "python-parity" in proc.stderr
    assert_no_traceback(proc)


# --- python-parity -------------------------------------------------------------------------


def test_parity_catches_a_newer_base_image(example_repo, inv):
    edit(example_repo / "Dockerfile", "FROM python:3.11-slim", "FROM python:3.12-slim")
    commit_all(example_repo, "3.12 image")
    result = assert_only_failure(inv, example_repo, "python-parity")
    assert "the image runs Python 3.12" in result["reason"]
    assert "3.11" in result["reason"]


def test_parity_follows_arg_defaults(example_repo, inv):
    edit(example_repo / "Dockerfile", "FROM python:3.11-slim",
         "ARG PYTHON_VERSION=3.12\nFROM python:${PYTHON_VERSION}-slim")
    commit_all(example_repo, "3.12 via ARG")
    result = assert_only_failure(inv, example_repo, "python-parity")
    assert "Python 3.12" in result["reason"]


def test_parity_only_concerns_the_final_stage(example_repo, inv):
    edit(example_repo / "Dockerfile", "FROM python:3.11-slim",
         "FROM python:3.12-slim AS builder\nRUN python -V\n\nFROM python:3.11-slim")
    commit_all(example_repo, "3.12 builder, 3.11 final")
    code, results = check_json(inv, example_repo)
    assert code == 0, results
    assert all(r["ok"] for r in results)


def test_parity_follows_a_stage_alias(example_repo, inv):
    edit(example_repo / "Dockerfile", "FROM python:3.11-slim",
         "FROM python:3.12-slim AS base\nRUN python -V\n\nFROM base")
    commit_all(example_repo, "final stage is an alias of 3.12")
    assert_only_failure(inv, example_repo, "python-parity")


def test_parity_catches_python_version_file(example_repo, inv):
    (example_repo / ".python-version").write_text("3.12.4\n")
    commit_all(example_repo, ".python-version 3.12")
    result = assert_only_failure(inv, example_repo, "python-parity")
    assert ".python-version is 3.12" in result["reason"]


def test_parity_catches_requires_python(example_repo, inv):
    (example_repo / "pyproject.toml").write_text('[project]\nname = "x"\n'
                                                 'requires-python = ">=3.12"\n')
    commit_all(example_repo, "requires 3.12")
    result = assert_only_failure(inv, example_repo, "python-parity")
    assert "requires-python" in result["reason"]


# --- lock-fresh ----------------------------------------------------------------------------


def test_lock_fresh_catches_requirements_edited_after_locking(example_repo, inv):
    with (example_repo / "requirements.txt").open("a") as f:
        f.write("httpx>=0.27\n")
    commit_all(example_repo, "new requirement, no lock")
    result = assert_only_failure(inv, example_repo, "lock-fresh")
    assert "requirements.txt changed since requirements.lock was made" in result["reason"]
    assert "inv lock" in result["fix"]


def test_lock_fresh_catches_a_dockerfile_installing_requirements_txt(example_repo, inv):
    edit(example_repo / "Dockerfile", INSTALL_LOCK,
         "COPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt")
    commit_all(example_repo, "install from requirements.txt")
    result = assert_only_failure(inv, example_repo, "lock-fresh")
    assert "installs from requirements.txt, not from the lock" in result["reason"]


def test_lock_fresh_catches_a_dockerfile_ignoring_the_lock(example_repo, inv):
    edit(example_repo / "Dockerfile", "COPY requirements.lock .\n", "")
    edit(example_repo / "Dockerfile", INSTALL_LOCK, "RUN pip install fastapi")
    commit_all(example_repo, "no lock in the image")
    result = assert_only_failure(inv, example_repo, "lock-fresh")
    assert "never uses requirements.lock" in result["reason"]


# --- env-complete --------------------------------------------------------------------------


def test_env_complete_catches_a_compose_variable_without_default(example_repo, inv):
    edit(example_repo / "compose.yaml", "    environment:\n",
         '    environment:\n      NEW_VAR: "${NEW_VAR}"\n')
    commit_all(example_repo, "compose reads NEW_VAR")
    result = assert_only_failure(inv, example_repo, "env-complete")
    assert "${NEW_VAR}" in result["reason"]
    assert "NEW_VAR" in result["fix"] and ".env.example" in result["fix"]


def test_env_complete_catches_a_service_the_compose_file_lacks(example_repo, inv):
    """service = "nosuch" | before: accepted until the VM's compose refused it | env-complete
    fails naming the service and the ones the compose file has."""
    edit(example_repo / "deploy.toml", 'service = "app"', 'service = "nosuch"')
    commit_all(example_repo, "a service the compose file lacks")
    result = assert_only_failure(inv, example_repo, "env-complete")
    assert "'nosuch'" in result["reason"] and "it has: app" in result["reason"]
    assert "service" in result["fix"]


def test_env_complete_accepts_a_compose_variable_with_default(example_repo, inv):
    edit(example_repo / "compose.yaml", "    environment:\n",
         '    environment:\n      NEW_VAR: "${NEW_VAR:-fallback}"\n')
    commit_all(example_repo, "compose reads NEW_VAR with a default")
    code, results = check_json(inv, example_repo)
    assert code == 0, results


def test_env_complete_catches_a_dotenv_key_missing_from_example(example_repo, inv):
    with (example_repo / ".env").open("a") as f:
        f.write("EXTRA_KEY=1\n")
    result = assert_only_failure(inv, example_repo, "env-complete")
    assert ".env sets EXTRA_KEY, missing from .env.example" in result["reason"]


def test_env_complete_catches_an_example_key_missing_from_dotenv(example_repo, inv):
    with (example_repo / ".env.example").open("a") as f:
        f.write("ANOTHER_KEY=placeholder\n")
    commit_all(example_repo, "declare ANOTHER_KEY")
    result = assert_only_failure(inv, example_repo, "env-complete")
    assert ".env.example declares ANOTHER_KEY, missing from .env" in result["reason"]
    assert "set ANOTHER_KEY in .env" in result["fix"]


# --- migrations ----------------------------------------------------------------------------

SECOND_HEAD = '''\
"""another branch"""
revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def test_migrations_catches_two_heads(example_repo, inv):
    versions = example_repo / "migrations" / "versions"
    shutil.copy(EXAMPLE / "v2" / "migrations" / "versions" / "0002_add_note.py", versions)
    (versions / "0003_other_branch.py").write_text(SECOND_HEAD)
    commit_all(example_repo, "two heads")
    result = assert_only_failure(inv, example_repo, "migrations")
    assert "2 Alembic heads" in result["reason"]
    assert "0002" in result["reason"] and "0003" in result["reason"]
    assert "alembic merge" in result["fix"]


def test_migrations_catches_a_model_change_without_migration(example_repo, inv):
    shutil.copy(EXAMPLE / "v2" / "app" / "models.py", example_repo / "app" / "models.py")
    commit_all(example_repo, "new column, no migration")
    result = assert_only_failure(inv, example_repo, "migrations")
    assert "the models differ from the migrations" in result["reason"]
    assert "note" in result["reason"]
    assert "--autogenerate" in result["fix"]


def test_migrations_pass_with_model_change_and_its_migration(example_repo, inv):
    shutil.copy(EXAMPLE / "v2" / "app" / "models.py", example_repo / "app" / "models.py")
    shutil.copy(EXAMPLE / "v2" / "migrations" / "versions" / "0002_add_note.py",
                example_repo / "migrations" / "versions")
    commit_all(example_repo, "v2 with its migration")
    code, results = check_json(inv, example_repo)
    assert code == 0, results
    assert "one head (0002)" in results[CHECKS.index("migrations")]["detail"]


def test_migrations_catches_a_failing_migration(example_repo, inv):
    path = example_repo / "migrations" / "versions" / "0001_create_items.py"
    edit(path, '    op.create_table(\n', '    op.execute("SELECT * FROM no_such_table")\n'
         '    op.create_table(\n')
    commit_all(example_repo, "broken migration")
    result = assert_only_failure(inv, example_repo, "migrations")
    assert "migrating an empty database to head failed" in result["reason"]


# --- git-clean -----------------------------------------------------------------------------


def test_git_clean_catches_an_uncommitted_change(example_repo, inv):
    with (example_repo / "app" / "main.py").open("a") as f:
        f.write("\n# uncommitted\n")
    result = assert_only_failure(inv, example_repo, "git-clean")
    assert "1 uncommitted change(s): app/main.py" in result["reason"]


def test_git_clean_catches_an_untracked_file(example_repo, inv):
    (example_repo / "notes.txt").write_text("scratch\n")
    result = assert_only_failure(inv, example_repo, "git-clean")
    assert "notes.txt" in result["reason"]


# --- deploy.local.dockerfile ---------------------------------------------------------------------


def parse(tmp_path: Path, text: str) -> dockerfile.Dockerfile:
    path = tmp_path / "Dockerfile"
    path.write_text(textwrap.dedent(text))
    return dockerfile.parse(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM python:3.11-slim\n", "3.11"),
        ("FROM docker.io/library/python:3.10.4-bookworm\n", "3.10"),
        ("ARG PYTHON_VERSION=3.12\nFROM python:${PYTHON_VERSION}-slim\n", "3.12"),
        ('ARG PY="3.9"\nFROM python:$PY\n', "3.9"),
        ("FROM python:${PYTHON_VERSION:-3.13}-slim\n", "3.13"),
        ("ARG PYTHON_VERSION=3.12\nFROM python:${PYTHON_VERSION:-3.8}-slim\n", "3.12"),
        ("FROM --platform=linux/amd64 python:3.11 AS app\n", "3.11"),
        ("FROM python:3.12 AS builder\nRUN true\nFROM python:3.11-slim\n", "3.11"),
        ("FROM python:3.12 AS base\nFROM base AS mid\nRUN true\nFROM mid\n", "3.12"),
        ("FROM python:3.12 AS Base\nFROM base\n", "3.12"),
        ("# comment\nFROM \\\n  python:3.10-slim\n", "3.10"),
    ],
)
def test_final_python(tmp_path, text, expected):
    assert dockerfile.final_python(parse(tmp_path, text)) == expected


def test_arg_inside_a_stage_does_not_change_from(tmp_path):
    parsed = parse(tmp_path, "ARG V=3.11\nFROM python:${V}\nARG V=3.12\nFROM python:${V}\n")
    assert parsed.args == {"V": "3.11"}
    assert dockerfile.final_python(parsed) == "3.11"


@pytest.mark.parametrize(
    "text",
    [
        "FROM ubuntu:22.04\n",
        "FROM python:latest\n",
        "FROM python:${UNSET}-slim\n",
        "FROM python:3.12 AS a\nFROM a AS b\nFROM b AS a\nFROM b\n",
    ],
)
def test_unreadable_final_from_is_an_error(tmp_path, text):
    with pytest.raises(DeployError) as err:
        dockerfile.final_python(parse(tmp_path, text))
    assert "cannot read a Python version" in err.value.message
    assert "python:3.11-slim" in err.value.fix


def test_dockerfile_without_from_or_file_is_an_error(tmp_path):
    with pytest.raises(DeployError) as err:
        parse(tmp_path, "RUN true\n")
    assert "has no FROM line" in err.value.message
    with pytest.raises(DeployError) as err:
        dockerfile.parse(tmp_path / "missing" / "Dockerfile")
    assert "no Dockerfile at" in err.value.message


def test_run_lines_and_mentions(tmp_path):
    parsed = parse(tmp_path, """\
        FROM python:3.11
        COPY requirements.lock .
        RUN pip install \\
            --require-hashes -r requirements.lock
        """)
    runs = [" ".join(line.split()) for line in dockerfile.run_lines(parsed)]
    assert runs == ["pip install --require-hashes -r requirements.lock"]
    assert dockerfile.mentions(parsed, "requirements.lock")
    assert not dockerfile.mentions(parsed, "requirements.txt")


# --- deploy.local.checks.envcomplete.compose_variables -------------------------------


def test_compose_variables_defaults_required_and_escapes():
    text = textwrap.dedent("""\
        services:
          app:
            image: "${IMAGE:-app}:${TAG-latest}"
            environment:
              NEEDED: "${NEEDED:?set it}"
              ALSO: "${ALSO?set it}"
              PLAIN: "${PLAIN}"
              BARE: "$BARE"
              ALT: "${ALT:+yes}"
              LITERAL: "$$NOT_A_VAR and $${NOR_THIS}"
        """)
    assert compose_variables(text) == {
        "IMAGE": True,
        "TAG": True,
        "NEEDED": False,
        "ALSO": False,
        "PLAIN": False,
        "BARE": False,
        "ALT": True,
    }


def test_compose_variable_used_once_without_default_is_required():
    assert compose_variables("a: ${X:-1}\nb: ${X-2}\n") == {"X": True}
    assert compose_variables("a: ${X}\nb: ${X:-1}\n") == {"X": False}
    assert compose_variables("a: ${X:-1}\nb: ${X}\n") == {"X": False}
    assert compose_variables("a: $X\nb: ${X-1}\n") == {"X": False}
