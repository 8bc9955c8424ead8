"""`inv demo`: the embedded example deployed v1 -> v2 -> rollback to v1 on the sandbox VM.

It drives `inv` and `fab` as a user would, in a git copy of example/, and prints what is served
after each step.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from deploy import remote
from deploy.commands import vm as cmd
from deploy.envfile import read_env_file
from deploy.errors import DeployError
from deploy.settings import load_settings
from sandbox.box import up
from sandbox.vms import Vm as SandboxVm

EXAMPLE = Path(__file__).resolve().parent.parent / "example"
EXAMPLE_POSTGRES = EXAMPLE.parent / "example-postgres"
SKIP = shutil.ignore_patterns("v2", "data", ".env", "*.db", "__pycache__", ".pytest_cache")


def banner(text: str) -> None:
    print(f"\n{'=' * 8} {text} {'=' * max(0, 60 - len(text))}", flush=True)


def sh(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, check=False, text=True)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=demo", "-c", "user.email=demo@localhost", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


def prepare(work: Path, vm: SandboxVm, example: Path = EXAMPLE) -> None:
    """A fresh git repo holding example v1, with a .env made from .env.example, deploying to
    sandbox VM `vm`."""
    if not example.is_dir():
        raise DeployError(f"the example app is missing at {example}", "run from a repo checkout")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(example, work, ignore=SKIP)
    example_env = (work / ".env.example").read_text()
    (work / ".env").write_text(
        example_env.replace("APP_SECRET=change-me", f"APP_SECRET={secrets.token_hex(16)}")
        .replace("POSTGRES_PASSWORD=change-me", f"POSTGRES_PASSWORD={secrets.token_hex(16)}")
    )
    (work / "tasks.py").write_text("from deploy.tasks import ns  # noqa: F401\n")
    point_at(work, vm)
    # The example's development environment (where its tests and the migrations check run):
    # this venv holds its requirements.
    (work / ".venv").symlink_to(sys.prefix)
    (work / "fabfile").mkdir(exist_ok=True)
    (work / "fabfile" / "__init__.py").write_text("from deploy.fabtasks import ns  # noqa: F401\n")
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "example v1")


def apply_v2(work: Path, example: Path = EXAMPLE) -> None:
    shutil.copytree(example / "v2", work, dirs_exist_ok=True)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "example v2: items get a note column")


def on_vm(vm: SandboxVm, *curl_args: str) -> str:
    """An HTTP request made on the VM (the app listens on the VM's loopback only)."""
    proc = subprocess.run(vm.in_vm("curl", "-sS", "--max-time", "5", *curl_args),
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else f"(no answer: {proc.stderr.strip()})"


def served(vm: SandboxVm, base: str) -> str:
    return (f"GET /version -> {on_vm(vm, base + '/version')}\n"
            f"GET /items   -> {on_vm(vm, base + '/items')}")


def post_item(vm: SandboxVm, base: str, name: str) -> None:
    status = on_vm(vm, "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H",
                   "Content-Type: application/json", "-d", json.dumps({"name": name}),
                   base + "/items")
    print(f"POST /items {name!r} -> {status}")


def point_at(work: Path, vm: SandboxVm) -> None:
    """The demo's deploy.toml names the sandbox VM as a user names theirs: host and port."""
    path = work / "deploy.toml"
    lines = []
    for line in path.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "host":
            line = f'host = "{vm.name}"'
        elif key == "port":
            line = "port = 22"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def reset_vm(work: Path) -> None:
    """Remove what an earlier demo left in the VM's app directory (its schema is ahead)."""
    settings = load_settings(work, environ={})
    for target in remote.targets(settings):
        with remote.session(settings, target) as vm:
            vm.ensure_helper()  # makes app_dir (and .deploy/, backups/) on a fresh VM
            if vm.run(["test", "-f", settings.compose_file], check=False, quiet=True).ok:
                vm.run([*vm.compose(), "down", "--remove-orphans"], check=False, hide=True)
            # a demo of an older toolkit may have run it under another project name
            for name in vm.run(cmd.dir_projects(settings.app_dir), check=False,
                               quiet=True).stdout.split():
                vm.run(["docker", "compose", "--project-name", name, "down", "--remove-orphans"],
                       check=False, hide=True)
            vm.run(["rm", "-rf", settings.app_dir], cwd="")


def newest_backup(work: Path) -> str:
    """The newest backup on the VM (`fab backups` lists newest first)."""
    out = subprocess.run([sys.executable, "-m", "fabric", "backups"], cwd=work, env=step_env(),
                         check=True, capture_output=True, text=True).stdout
    return out.split()[0]


def step_env() -> dict[str, str]:
    """Our environment without DEPLOY_* settings (the demo's deploy.toml decides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("DEPLOY_SANDBOX_")})
    return env


def step(argv: list[str], work: Path) -> None:
    env = step_env()
    shown = " ".join(["inv" if argv[2] == "invoke" else "fab", *argv[3:]])
    print(f"\n$ {shown}", flush=True)
    if sh(argv, work, env).returncode != 0:
        raise DeployError(f"demo step `{shown}` failed", "see its output above")


def run_demo(work: Path | None = None, postgres: bool = False) -> None:
    """v1 -> v2 -> rollback; with `postgres`, the Postgres example, then a restore of the
    backup taken before v2's migration."""
    example = EXAMPLE_POSTGRES if postgres else EXAMPLE
    banner("sandbox")
    box = up()
    work = work or box.state_dir / "demo" / ("app-postgres" if postgres else "app")
    vm = box.vm(1)
    prepare(work, vm, example)
    port = read_env_file(work / ".env").get("APP_PORT", "8000")
    base = f"http://127.0.0.1:{port}"  # on the VM
    inv = [sys.executable, "-m", "invoke"]
    fab = [sys.executable, "-m", "fabric"]
    reset_vm(work)
    v1 = git(work, "rev-parse", "--short=7", "HEAD")

    banner(f"deploy v1 ({v1})")
    step([*fab, "setup"], work)
    step([*inv, "deploy"], work)
    post_item(vm, base, "written under v1")
    post_item(vm, base, "also v1")
    print(served(vm, base))

    apply_v2(work, example)
    v2 = git(work, "rev-parse", "--short=7", "HEAD")
    banner(f"deploy v2 ({v2}): migration 0002 adds items.note")
    step([*inv, "deploy"], work)
    print(served(vm, base))

    banner(f"roll back to v1 ({v1})")
    step([*fab, "rollback", f"--tag={v1}"], work)
    print(served(vm, base))

    if postgres:
        banner("restore the backup taken before v2's migration")
        post_item(vm, base, "written after the backup")
        print(served(vm, base))
        step([*fab, "backups"], work)
        step([*fab, "restore", f"--backup={newest_backup(work)}"], work)
        print(served(vm, base))

    banner("release history")
    step([*fab, "releases"], work)
    print(f"\nThe demo app is in {work};\nthe VM's copy in {vm.name}'s app_dir (on this laptop: "
          f"{vm.srv}).\nv1 is serving at {base} on {vm.name} (`python -m sandbox status` "
          "shows how to ssh there).")
