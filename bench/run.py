"""Speed benchmarks against the sandbox: prints each figure with its target and the machine.

usage: .venv/bin/python bench/run.py [--runs N]

1. remote half, on sandbox VM vm2: `fab deploy` vs a hand-written script with one ssh per step
   (bench/deploy.sh), and vs the floor (the same script's commands run on the VM, no SSH);
   `fab deploy` with proxy = true (blue/green behind Caddy) vs its floor (bench/deploy_proxy.sh:
   the same docker commands and upstream write on the VM, no SSH), and where the switch's
   seconds go (new container start, health through Caddy, the old container's stop)
2. SSH connections per `fab deploy` and per `inv deploy`, counted in the sshd log
3. redeploy of an unchanged commit vs its first deploy
4. `inv lock --check` time; `inv lock` through uv vs pip-compile, with identical pins
5. `inv --list` and `fab --list` start-up time
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # vmkit's Caddy of our own (mypy: mypy_path)
sys.path.insert(0, str(REPO))

import vmkit  # noqa: E402

import sandbox  # noqa: E402
from deploy.commands.vm import project_name  # noqa: E402
from deploy.local.pins import find_uv, locked_names  # noqa: E402
from sandbox.apprepo import EXAMPLE, commit_all, make_app_repo  # noqa: E402
from sandbox.images import CADDY  # noqa: E402
from sandbox.ports import free_port  # noqa: E402

INV = [sys.executable, "-m", "invoke"]
FAB = [sys.executable, "-m", "fabric"]
ROWS: list[tuple[str, str, str, bool | None]] = []  # met: None when not measured


def run(argv: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> float:
    """Run a command quietly; its wall time in seconds."""
    return run_out(argv, cwd, env, check)[0]


def run_out(argv: list[str], cwd: Path, env: dict | None = None, check: bool = True
            ) -> tuple[float, str]:
    """Run a command quietly; its wall time in seconds and its output."""
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if check and proc.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took, proc.stdout + proc.stderr


def median_time(argv: list[str], cwd: Path, env: dict | None = None, runs: int = 5) -> float:
    return statistics.median(run(argv, cwd, env) for _ in range(runs))


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "MISSED"


def report(name: str, measured: str, target: str, met: bool | None) -> None:
    ROWS.append((name, measured, target, met))
    print(f"  {name}: {measured} (target {target}) {verdict(met).upper()}", flush=True)


def prepare_app(work: Path, port: int) -> Path:
    return make_app_repo(work / "app", EXAMPLE, {"APP_SECRET": "bench", "APP_PORT": str(port)},
                         message="bench app")


BENCH_VM = 2  # the tests deploy to vm1 by default


def ssh_logins(box: sandbox.Sandbox) -> int:
    return box.vm(BENCH_VM).log("sshd").read_text(errors="replace").count("Accepted publickey")


def bench_remote(app: Path, env: dict, box: sandbox.Sandbox, image: str, app_dir: str,
                 runs: int) -> None:
    print("1. remote half", flush=True)
    project = project_name(app_dir)
    vm = box.vm(BENCH_VM)
    ssh = (f"ssh -q -i {box.key_file} -o UserKnownHostsFile={box.known_hosts} "
           f"-o StrictHostKeyChecking=yes -p 22 {box.ssh_user}@{vm.address}")
    on_vm = " ".join(vm.in_vm("sh", "-c"))  # the floor: the same commands on the VM, no SSH
    script = [str(REPO / "bench" / "deploy.sh"), app_dir, image]
    ours, by_ssh, floor = [], [], []
    tags = ["b1", "b2"]
    for i in range(runs):
        # Each run switches the tag, so every variant really recreates the container.
        ours.append(run([*FAB, "deploy", f"--tag={tags[i % 2]}"], app, env))
        by_ssh.append(run(script + [tags[(i + 1) % 2], project], app, {**env, "RUN": ssh}))
        floor.append(run(script + [tags[i % 2], project], app, {**env, "RUN": on_vm}))
    for name, samples in (("fab deploy", ours), ("one ssh per step", by_ssh),
                          ("floor", floor)):
        print(f"  {name:<17} " + " ".join(f"{x:.2f}" for x in samples))
    m_ours, m_ssh, m_floor = (statistics.median(x) for x in (ours, by_ssh, floor))
    print(f"  fab deploy {m_ours:.2f}s, script with one ssh per step {m_ssh:.2f}s, "
          f"floor (no SSH) {m_floor:.2f}s  (medians of {runs})")
    report("1a script time / fab deploy time", f"{m_ssh / m_ours:.2f}x", ">= 1.5x",
           m_ssh / m_ours >= 1.5)
    report("1b fab deploy over the floor", f"{(m_ours / m_floor - 1) * 100:+.1f}%", "<= +10%",
           m_ours <= m_floor * 1.10)


PHASES = ("start", "healthy", "stop")
# `fab deploy`'s line: `switch behind the proxy (start 0.7s, healthy 2.2s) 3.0s · recorded ·
# old container stopping`: the deploy does not wait for the stop, 0 s of it
FAB_PHASES = re.compile(r"switch behind the proxy \(start ([\d.]+)s, healthy ([\d.]+)s\) "
                        r"[\d.]+s · recorded")


def fab_phases(out: str) -> dict[str, float]:
    found = FAB_PHASES.search(out)
    if not found:
        sys.exit(f"no switch phases in `fab deploy`'s output:\n{out[-2000:]}")
    start, healthy = map(float, found.groups())
    return {"start": start, "healthy": healthy, "stop": 0.0}


def floor_phases(out: str) -> dict[str, float]:
    found = re.search(r"^phases start=([\d.]+) healthy=([\d.]+) stop=([\d.]+)$", out, re.M)
    if not found:
        sys.exit(f"no phases in the floor's output:\n{out[-2000:]}")
    return dict(zip(PHASES, map(float, found.groups()), strict=True))


def bench_proxy(work: Path, env: dict, box: sandbox.Sandbox, image: str, runs: int) -> None:
    """`fab deploy` with proxy = true against its floor, with the switch's phases."""
    print("1c. remote half behind the proxy (blue/green)", flush=True)
    vm = box.vm(BENCH_VM)
    caddy = vmkit.Proxy(CADDY, vm)
    suffix = uuid.uuid4().hex[:8]
    app_dir = f"/srv/bench-proxy-{suffix}"
    project = project_name(app_dir)
    host = f"{project}.test"
    app = make_app_repo(work / "proxied", EXAMPLE, {"APP_SECRET": "bench", "APP_PORT": "8000"},
                        message="bench app behind the proxy")
    # compose.proxy.yaml names its network ${PROXY_NETWORK:-deploy-proxy}
    (app / ".env").write_text((app / ".env").read_text() + f"PROXY_NETWORK={caddy.network}\n")
    penv = {**env, "DEPLOY_APP_DIR": app_dir, "DEPLOY_PROXY": "true", "DEPLOY_PROXY_HOST": host,
            "DEPLOY_COMPOSE_FILE": "compose.proxy.yaml", "DEPLOY_HEALTH_URL": "",
            **caddy.settings()}
    on_vm = " ".join(vm.in_vm("sh", "-c"))
    script = [str(REPO / "bench" / "deploy_proxy.sh"), app_dir, image]
    tags = ["b1", "b2"]
    try:
        run([*FAB, "setup"], app, penv)
        run([*FAB, "deploy", "--tag=b2"], app, penv)  # warm up: the first container
        ours: list[float] = []
        floor: list[float] = []
        phases: dict[str, list[dict[str, float]]] = {"fab deploy": [], "floor": []}
        for i in range(runs):
            took, out = run_out([*FAB, "deploy", f"--tag={tags[i % 2]}"], app, penv)
            ours.append(took)
            phases["fab deploy"].append(fab_phases(out))
            vmkit.wait_retired(vm, app_dir)  # untimed: the floor must find one container
            took, out = run_out(script + [tags[(i + 1) % 2], project, caddy.proxy_dir, host],
                                app, {**penv, "RUN": on_vm})
            floor.append(took)
            phases["floor"].append(floor_phases(out))
        for name, samples in (("fab deploy", ours), ("floor", floor)):
            print(f"  {name:<17} " + " ".join(f"{x:.2f}" for x in samples))
        m_ours, m_floor = statistics.median(ours), statistics.median(floor)
        print(f"  fab deploy (proxy) {m_ours:.2f}s, floor (no SSH) {m_floor:.2f}s  "
              f"(medians of {runs})")
        print("  the switch's phases (medians): new container start, health through Caddy, "
              "old container's stop (fab does not wait for it: it stops in the background)")
        for name, seen in phases.items():
            print(f"    {name:<11} " + ", ".join(
                f"{p} {statistics.median(s[p] for s in seen):.2f}s" for p in PHASES))
        report("1c fab deploy over the floor, proxy = true",
               f"{(m_ours / m_floor - 1) * 100:+.1f}%", "<= +10%", m_ours <= m_floor * 1.10)
    finally:
        subprocess.run(vm.in_vm("docker", "compose", "--project-name", project, "--file",
                                f"{app_dir}/compose.proxy.yaml", "down"), capture_output=True)
        shutil.rmtree(vm.host_path(app_dir), ignore_errors=True)
        caddy.tear_down()


def bench_connections(app: Path, env: dict, box: sandbox.Sandbox) -> float:
    """Figure 2; returns the time of its `inv deploy`, the first deploy of a new commit, which
    figure 3 compares the redeploy with (one whole `inv deploy` for both figures)."""
    print("2. SSH connections", flush=True)
    (app / "CHANGELOG").write_text(f"bench {uuid.uuid4().hex}\n")
    commit_all(app, "a new commit to deploy")
    took = 0.0
    for name, argv in (("fab deploy", [*FAB, "deploy", "--tag=b1"]),
                       ("fab status", [*FAB, "status"]),
                       ("inv deploy", [*INV, "deploy"])):
        before = ssh_logins(box)
        took = run(argv, app, env)
        time.sleep(0.2)  # let sshd write its log line
        count = ssh_logins(box) - before
        report(f"2 connections per {name}", str(count), "exactly 1", count == 1)
    return took


def bench_redeploy(app: Path, env: dict, first: float) -> None:
    """Figure 3: `inv deploy` again of the commit whose first deploy took `first` seconds."""
    print("3. redeploy of an unchanged commit", flush=True)
    again = run([*INV, "deploy"], app, env)
    print(f"  first deploy {first:.2f}s, redeploy {again:.2f}s")
    report("3 redeploy / first deploy", f"{again / first * 100:.1f}%", "< 20%",
           again < 0.2 * first)


def bench_lock(app: Path, env: dict, runs: int, quick: bool = False) -> None:
    """Figure 4; `quick` locks with uv alone (pip-compile takes some 40 s: tests/test_pins.py
    runs it, and checks uv pins the same versions)."""
    print("4. lock", flush=True)
    check = median_time([*INV, "lock", "--check"], app, env, runs)
    report("4a inv lock --check", f"{check:.3f}s", "< 0.3s", check < 0.3)
    if not find_uv():
        report("4b inv lock via uv", "uv not installed", ">= 3x", False)
        return
    backends = ("uv",) if quick else ("pip-tools", "uv")
    with tempfile.TemporaryDirectory() as tmp:
        pins = {}
        times = {}
        for backend in backends:
            work = Path(tmp) / backend
            work.mkdir()
            shutil.copy(app / "requirements.txt", work / "requirements.txt")
            (work / "tasks.py").write_text("from deploy.cli.tasks import ns  # noqa: F401\n")
            benv = {**env, "DEPLOY_LOCK_BACKEND": backend}
            samples = []
            for _ in range(min(runs, 3)):
                (work / "requirements.lock").unlink(missing_ok=True)
                samples.append(run([*INV, "lock"], work, benv))
            times[backend] = statistics.median(samples)
            text = (work / "requirements.lock").read_text()
            pins[backend] = {line.split()[0] for line in text.splitlines() if "==" in line
                             and not line.startswith((" ", "#"))}
            assert locked_names(text)
    if quick:
        print(f"  uv {times['uv']:.2f}s, {len(pins['uv'])} pins (pip-compile: full runs only)")
        report("4b inv lock: pip-compile / uv", f"uv {times['uv']:.2f}s, pip-compile not run "
               "(--quick)", ">= 3x, identical", None)
        return
    same = pins["pip-tools"] == pins["uv"]
    ratio = times["pip-tools"] / times["uv"]
    print(f"  pip-compile {times['pip-tools']:.2f}s, uv {times['uv']:.2f}s, "
          f"{len(pins['uv'])} pins, identical: {same}")
    if not same:
        print(f"  differ: {sorted(pins['pip-tools'] ^ pins['uv'])}")
    report("4b inv lock: pip-compile / uv", f"{ratio:.1f}x, pins identical: {same}",
           ">= 3x, identical", ratio >= 3 and same)


def bench_startup(app: Path, env: dict, runs: int) -> None:
    print("5. start-up", flush=True)
    for name, argv in (("inv --list", [*INV, "--list"]), ("fab --list", [*FAB, "--list"])):
        took = median_time(argv, app, env, runs)
        report(f"5 {name}", f"{took:.3f}s", "< 0.5s", took < 0.5)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True).stdout.strip()
    return (f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}, "
            f"Python {platform.python_version()}, Docker engine {docker}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true",
                        help="one run of each figure (CI's mode): the figures are printed, a "
                        "missed target does not fail it; inv lock through uv alone")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    print(f"machine: {machine()}", flush=True)
    box = sandbox.up(vms=BENCH_VM)
    vm = box.vm(BENCH_VM)
    suffix = uuid.uuid4().hex[:8]
    image = f"{box.registry}/bench-{suffix}"
    app_dir = f"/srv/bench-{suffix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    port = free_port()  # the app's port on the VM; its health URL is asked on the VM
    # the compose switch, as deploy.sh does it (the example turns the proxy on)
    env.update(DEPLOY_IMAGE=image, DEPLOY_APP_DIR=app_dir, DEPLOY_HOST=vm.address,
               DEPLOY_PROXY="false", DEPLOY_PORT="22", DEPLOY_USER=box.ssh_user,
               DEPLOY_HEALTH_URL=f"http://127.0.0.1:{port}/health",
               DEPLOY_KEY_FILE=str(box.key_file), DEPLOY_KNOWN_HOSTS=str(box.known_hosts))
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        app = prepare_app(Path(tmp), port)
        try:
            for tag in ("b1", "b2"):
                for step in ("build", "smoke", "push"):
                    run([*INV, step, f"--version={tag}"], app, env)
            run([*FAB, "setup"], app, env)
            run([*FAB, "deploy", "--tag=b2"], app, env)  # warm up: first deploy, image pulled
            bench_remote(app, env, box, image, app_dir, args.runs)
            bench_proxy(Path(tmp), env, box, image, args.runs)
            first = bench_connections(app, env, box)
            bench_redeploy(app, env, first)
            bench_lock(app, env, args.runs, args.quick)
            bench_startup(app, env, args.runs)
        finally:
            project = project_name(app_dir)
            subprocess.run(vm.in_vm("docker", "compose", "--project-name", project, "--file",
                                    f"{app_dir}/compose.yaml", "down"), capture_output=True)
            shutil.rmtree(vm.host_path(app_dir), ignore_errors=True)
    print("\n| target | measured | goal | |\n| --- | --- | --- | --- |")
    for name, measured, target, met in ROWS:
        print(f"| {name} | {measured} | {target} | {verdict(met)} |")
    print(f"\n{machine()}")
    return 0 if args.quick or all(met is not False for *_, met in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
