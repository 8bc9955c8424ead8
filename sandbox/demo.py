"""`inv demo`: the embedded example deployed v1 -> v2 -> rollback to v1 on the sandbox VM.

It drives `inv` and `fab` as a user would, in a git copy of example/, and prints what is served
after each step.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deploy.commands import vm as cmd
from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.settings import load_settings
from deploy.vm import session
from sandbox.apprepo import EXAMPLE, EXAMPLE_POSTGRES, apply_v2, commit_all, git, make_app_repo
from sandbox.box import sandbox as existing_sandbox
from sandbox.box import up
from sandbox.vms import Vm


def banner(text: str) -> None:
    print(f"\n{'=' * 8} {text} {'=' * max(0, 60 - len(text))}", flush=True)


def sh(argv: list[str], cwd: Path, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, check=False, text=True)


def prepare(work: Path, vm: Vm, example: Path = EXAMPLE) -> None:
    """A fresh git repo holding example v1, with a .env made from .env.example, deploying to
    sandbox VM `vm`."""
    if not example.is_dir():
        raise DeployError(f"the example app is missing at {example}", "run from a repo checkout")
    shutil.rmtree(work, ignore_errors=True)
    make_app_repo(work, example, {"APP_SECRET": secrets.token_hex(16),
                                  "POSTGRES_PASSWORD": secrets.token_hex(16)})
    point_at(work, vm)
    commit_all(work, f"deploy to {vm.name}")


PROBE = Path(__file__).resolve().parent / "probe.py"


@dataclass(frozen=True)
class Entry:
    """Where the demo app answers on the VM: behind the proxy, Caddy's port with the app's
    Host; else the app's own port on the VM's loopback."""

    base: str
    host: str = ""

    @classmethod
    def of(cls, work: Path) -> Entry:
        settings = load_settings(work, environ={})
        if settings.proxy:
            return cls(f"http://127.0.0.1:{settings.proxy_http_port}",
                       settings.proxy_host.split(",")[0].strip())
        return cls(f"http://127.0.0.1:{read_env_file(work / '.env').get('APP_PORT', '8000')}")

    def curl(self, path: str, *args: str) -> list[str]:
        return ["curl", "-sS", "--max-time", "5", *(["-H", f"Host: {self.host}"] if self.host
                                                    else []), *args, self.base + path]


def on_vm(vm: Vm, argv: list[str]) -> str:
    """An HTTP request made on the VM (the app, or Caddy, answers on the VM only)."""
    proc = subprocess.run(vm.in_vm(*argv), capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else f"(no answer: {proc.stderr.strip()})"


def served(vm: Vm, entry: Entry) -> str:
    return (f"GET /version -> {on_vm(vm, entry.curl('/version'))}\n"
            f"GET /items   -> {on_vm(vm, entry.curl('/items'))}")


def post_item(vm: Vm, entry: Entry, name: str) -> None:
    status = on_vm(vm, entry.curl("/items", "-o", "/dev/null", "-w", "%{http_code}", "-X",
                                  "POST", "-H", "Content-Type: application/json", "-d",
                                  json.dumps({"name": name})))
    print(f"POST /items {name!r} -> {status}")


class SwitchProbe:
    """sandbox/probe.py running inside the VM while a step switches releases: GET /version
    20 times a second on new connections, the way users' requests reach the app; on exit
    one line, `probe: N requests, F failed (versions 1 -> 2)`."""

    def __init__(self, vm: Vm, entry: Entry) -> None:
        self.vm, self.entry = vm, entry
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SwitchProbe:
        self.proc = subprocess.Popen(
            self.vm.in_vm(sys.executable, str(PROBE), self.entry.base + "/version",
                          self.entry.host),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "probing": its first request is on its way
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        out, _ = self.proc.communicate("", timeout=60)
        try:
            got = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            print(f"probe: no result (exit {self.proc.returncode})", flush=True)
            return
        failures = f" {got['failures']}" if got["failed"] else ""
        print(f"probe: {got['requests']} requests, {got['failed']} failed{failures} (versions "
              f"{' -> '.join(got['versions']) or 'none'}, {got['seconds']}s, on {self.vm.name} "
              f"through {'Caddy' if self.entry.host else 'the app port'})", flush=True)


def point_at(work: Path, vm: Vm) -> None:
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
    for target in session.targets(settings):
        with session.session(settings, target) as vm:
            vm.ensure_helper()  # makes app_dir (and .deploy/, backups/) on a fresh VM
            # --volumes: the demo writes a new database password at each run, which a kept
            # Postgres volume would refuse
            if vm.run(["test", "-f", settings.compose_file], check=False, quiet=True).ok:
                vm.run([*vm.compose(), "down", "--volumes", "--remove-orphans"], check=False,
                       hide=True)
            # a demo of an older toolkit may have run it under another project name
            for name in vm.run(cmd.dir_projects(settings.app_dir), check=False,
                               quiet=True).stdout.split():
                vm.run(["docker", "compose", "--project-name", name, "down", "--volumes",
                        "--remove-orphans"], check=False, hide=True)
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


def step(argv: list[str], work: Path, dry_run: bool = False) -> None:
    """Run one `inv`/`fab` step as the user types it (with `--dry-run` in a dry run)."""
    env = step_env()
    argv = [*argv, "--dry-run"] if dry_run else argv
    shown = " ".join(["inv" if argv[2] == "invoke" else "fab", *argv[3:]])
    print(f"\n$ {shown}", flush=True)
    if sh(argv, work, env).returncode != 0:
        raise DeployError(f"demo step `{shown}` failed", "see its output above")


def run_demo(work: Path | None = None, postgres: bool = False, dry_run: bool = False) -> None:
    """v1 -> v2 -> rollback; with `postgres`, the Postgres example, then a restore of the
    backup taken before v2's migration. `dry_run`: no sandbox, no VM; each step that has a
    dry run prints its commands, and what asks the VM is left out."""
    example = EXAMPLE_POSTGRES if postgres else EXAMPLE
    banner("sandbox")
    if dry_run:
        box = existing_sandbox()
        print("dry run: the sandbox is not started; nothing reaches a VM")
    else:
        box = up()
    work = work or box.state_dir / "demo" / ("app-postgres" if postgres else "app")
    vm = box.vm(1)
    prepare(work, vm, example)
    entry = Entry.of(work)
    inv = [sys.executable, "-m", "invoke"]
    fab = [sys.executable, "-m", "fabric"]
    if not dry_run:
        reset_vm(work)
    v1 = git(work, "rev-parse", "--short=7", "HEAD")

    def show() -> None:
        if not dry_run:
            print(served(vm, entry))

    def post(name: str) -> None:
        if not dry_run:
            post_item(vm, entry, name)

    def probed() -> contextlib.AbstractContextManager[object]:
        """A probe on the VM while a step switches the serving release (none in a dry run)."""
        return contextlib.nullcontext() if dry_run else SwitchProbe(vm, entry)

    banner(f"deploy v1 ({v1})")
    step([*fab, "setup"], work, dry_run)
    step([*inv, "deploy"], work, dry_run)
    post("written under v1")
    post("also v1")
    show()

    v2 = apply_v2(work, example)
    banner(f"deploy v2 ({v2}): migration 0002 adds items.note")
    with probed():
        step([*inv, "deploy"], work, dry_run)
    show()

    banner(f"roll back to v1 ({v1})")
    with probed():
        step([*fab, "rollback", f"--tag={v1}"], work, dry_run)
    show()

    if dry_run:
        print("\ndry run: `fab backups`, `fab restore` and `fab releases` read the VM; left out")
        return
    if postgres:
        banner("restore the backup taken before v2's migration")
        post_item(vm, entry, "written after the backup")
        print(served(vm, entry))
        step([*fab, "backups"], work)
        step([*fab, "restore", f"--backup={newest_backup(work)}"], work)
        print(served(vm, entry))

    banner("release history")
    step([*fab, "releases"], work)
    where = f"{entry.base} (Host: {entry.host}, Caddy)" if entry.host else entry.base
    print(f"\nThe demo app is in {work};\nthe VM's copy in {vm.name}'s app_dir (on this laptop: "
          f"{vm.srv}).\nv1 is serving at {where} on {vm.name} (`python -m sandbox status` "
          "shows how to ssh there).")
