"""The README's first command, `inv demo` (and `inv demo --postgres`), run as a newcomer runs
it: end to end on the sandbox behind Caddy, twice in a row, checking what it shows the user
(what is served after each step, and the probe's count of failed requests during each
switch). A dry run of it needs no Docker and no VM and runs in the fast tier."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, child_env, output

from sandbox import Sandbox
from sandbox.demo import reset_vm


def demo(*args: str, env: dict[str, str] | None = None, timeout: float = 900
         ) -> subprocess.CompletedProcess[str]:
    """`inv demo ARGS` from the repo's root, as the README has it."""
    return subprocess.run([sys.executable, "-m", "invoke", "demo", *args], cwd=REPO,
                          env=child_env(env), capture_output=True, text=True, timeout=timeout,
                          check=False)


def served(out: str) -> list[tuple[dict[str, str], list[str]]]:
    """Each `GET /version` answer the demo printed, with the item names of the `GET /items`
    line after it."""
    shown = []
    for version, items in re.findall(r"^GET /version -> (.*)\nGET /items   -> (.*)$", out,
                                     re.MULTILINE):
        shown.append((json.loads(version), [item["name"] for item in json.loads(items)]))
    return shown


def test_the_demo_dry_run_needs_no_engine_and_shows_every_step(tmp_path: Path) -> None:
    proc = demo("--dry-run", "--work", str(tmp_path / "app"),
                env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    out = output(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    v1, v2 = re.findall(r"^======== deploy (?:v1|v2) \((\w{7})\)", out, re.MULTILINE)
    assert v1 != v2
    steps = re.findall(r"^\$ (.*)$", out, re.MULTILINE)
    assert steps == ["fab setup --dry-run", "inv deploy --dry-run", "inv deploy --dry-run",
                     f"fab rollback --tag={v1} --dry-run"], steps
    for tag in (v1, v2):  # each release is built, pushed, migrated with and switched to
        assert "docker buildx build --load --platform linux/amd64 " in out
        assert f"--tag 127.0.0.1:5000/example:{tag}" in out
        assert f"docker push 127.0.0.1:5000/example:{tag}" in out
        assert f"DEPLOY_TAG={tag} docker compose" in out
    assert out.count("alembic upgrade head") == 2
    assert f"rolled back to {v1}" in out
    assert "GET /version" not in out and "probe:" not in out  # nothing asked of a VM
    # behind the proxy: the user's compose file with the tool's proxy form merged over it,
    # the new container started next to the serving one
    assert "--file compose.yaml --file .deploy/proxy.yaml" in out
    assert out.count("up -d --no-recreate --scale app=") == 3, out


@pytest.mark.parametrize("postgres", [False, True], ids=["sqlite", "postgres"])
def test_the_demo_runs_twice_in_a_row(sandbox: Sandbox, postgres: bool) -> None:
    """exit 0, the versions and rows served after each step, the same on the second run (the
    VM still holds the first run's app and data)."""
    args = ["--postgres"] if postgres else []
    v1_rows = ["written under v1", "also v1"]
    expected = [
        ({"version": "1", "revision": "0001"}, v1_rows),  # v1
        ({"version": "2", "revision": "0002"}, v1_rows),  # v2: rows kept through 0002
        ({"version": "1", "revision": "0002"}, v1_rows),  # rolled back, schema kept
    ]
    if postgres:
        expected += [
            ({"version": "1", "revision": "0002"}, [*v1_rows, "written after the backup"]),
            # the backup taken before v2's migration: its schema, its rows
            ({"version": "1", "revision": "0001"}, v1_rows),
        ]
    try:
        ran_twice(args, expected, postgres)
    finally:
        # the demo leaves its app serving, for the user to look at; the suite's other tests
        # would share the cores with its health checks
        work = sandbox.state_dir / "demo" / ("app-postgres" if postgres else "app")
        if (work / "deploy.toml").exists():
            reset_vm(work)


def ran_twice(args: list[str], expected: list[tuple[dict[str, str], list[str]]],
              postgres: bool) -> None:
    for attempt in (1, 2):
        proc = demo(*args)
        out = output(proc)
        assert proc.returncode == 0, f"run {attempt}:\n{out[-6000:]}"
        assert served(out) == expected, f"run {attempt}:\n{out[-6000:]}"
        # behind Caddy: a probe on the VM during the deploy of v2 and the rollback saw the
        # version change once and no request fail
        probes = re.findall(r"^probe: (\d+) requests, (\d+) failed.*?\(versions ([^,]*),", out,
                            re.MULTILINE)
        assert [(failed, versions) for _, failed, versions in probes] == [
            ("0", "1 -> 2"), ("0", "2 -> 1")], f"run {attempt}:\n{out[-6000:]}"
        assert all(int(count) >= 20 for count, _, _ in probes), probes
        assert "$ fab releases" in out
        if postgres:
            assert re.search(r"restored \d{8}T\d{6}Z-\w+\.dump", out), out[-3000:]
