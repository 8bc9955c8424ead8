"""Failed requests per release switch: compose recreate (proxy off) vs blue/green behind Caddy.

usage: .venv/bin/python bench/proxy.py [--rounds N] [--image caddy:2] [--quick]

The same run, on the sandbox VM, for each mode: the example app set up, v1 deployed, then
N rounds of `fab deploy` v2 and `fab rollback` to v1, one more of each with a 5 s request
(`/slow`) started every second, and one deploy of an image that never turns healthy
(switched back / never switched). Each command runs under a probe at 100 requests/s on new
connections (`/version`).
Then, behind Caddy: 30 forced config loads and one restart of the Caddy container.
Prints a Markdown table; exit 1 if any request failed behind the proxy. `--quick` (CI's mode):
one deploy of v2 and one rollback per mode, nothing else.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The test helpers (tests/vmkit.py) and the repo's sandbox package, when run as a script;
# mypy finds them through its mypy_path and files (pyproject.toml).
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import vmkit  # noqa: E402
from vmkit import App, InFlight, Probe  # noqa: E402

import sandbox  # noqa: E402

ROWS: list[tuple[str, str, int, int, int, int, float]] = []


def measure(mode: str, what: str, app: App, action: Callable[[], object],
            slow_requests: bool = False) -> int:
    """Run `action` under the probe (and 5 s requests); a table row; failed requests."""
    started = time.monotonic()
    with Probe(app) as probe, InFlight(app, seconds=5, count=60 if slow_requests else 0) \
            as slow:
        result = action()
    if isinstance(result, subprocess.CompletedProcess) and result.returncode:
        # a command expected to fail: say how it ended
        errors = [line for line in vmkit.output(result).splitlines() if "error:" in line]
        print(f"  ({what}: exit {result.returncode}, {(errors or ['no error line'])[0]})")
    took = time.monotonic() - started
    slow_failed = sum(h.status != 200 for h in slow.hits)
    ROWS.append((mode, what, len(probe.hits), len(probe.failed), len(slow.hits), slow_failed,
                 took))
    print(f"  {mode:<10} {what:<26} {probe.summary()}; 5 s requests: {len(slow.hits)}, "
          f"{slow_failed} failed", flush=True)
    return len(probe.failed) + slow_failed


def run_mode(mode: str, app: App, images: vmkit.Images, rounds: int,
             quick: bool = False) -> int:
    app.fab_ok("setup")
    app.deploy(images.v1)
    if quick:
        return (measure(mode, "deploy v2", app, lambda: app.deploy(images.v2))
                + measure(mode, "rollback to v1", app, lambda: app.fab_ok("rollback")))
    # First, while the schema is v1's (the unhealthy image is v1 with a failing /health).
    failed = measure(mode, "unhealthy image", app, lambda: app.fab(
        "deploy", f"--tag={images.unhealthy}", env={"DEPLOY_HEALTH_TIMEOUT": "15"}))
    for i in range(rounds):
        failed += measure(mode, f"deploy v2 ({i + 1})", app, lambda: app.deploy(images.v2))
        failed += measure(mode, f"rollback to v1 ({i + 1})", app,
                          lambda: app.fab_ok("rollback"))
    failed += measure(mode, "deploy v2, 5 s requests", app, lambda: app.deploy(images.v2),
                      slow_requests=True)
    failed += measure(mode, "rollback, 5 s requests", app, lambda: app.fab_ok("rollback"),
                      slow_requests=True)
    return failed


LOADS = 30


def forced_loads(proxy_dir: str) -> str:
    """sh for the VM: load Caddy's unchanged config LOADS times (`Cache-Control:
    must-revalidate` makes Caddy reload it anyway), 0.3 s apart."""
    curl = (f"curl -sS -o /dev/null --unix-socket {proxy_dir}/run/admin.sock "
            "-H 'Content-Type: application/json' -H 'Cache-Control: must-revalidate' "
            f"--data-binary @{proxy_dir}/conf/caddy.json http://localhost/load")
    return f"i=0; while [ $i -lt {LOADS} ]; do {curl} || exit 1; i=$((i+1)); sleep 0.3; done"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image", default="caddy:2", help="the Caddy image on the VM")
    parser.add_argument("--quick", action="store_true",
                        help="one deploy and one rollback per mode, nothing else")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    box = sandbox.up()
    with tempfile.TemporaryDirectory(prefix="deploy-bench-proxy-") as tmp:
        root = Path(tmp)
        images = vmkit.build_images(root / "images")
        proxy = vmkit.Proxy(args.image, box.vm(1))
        apps: list[App] = []
        try:
            for mode in ("recreate", "proxy"):
                app = App.create(vmkit.make_app_repo(root / mode), images, root / "cache", box)
                apps.append(app)
                if mode == "proxy":
                    app.use_proxy(proxy)
                failed = run_mode(mode, app, images, args.rounds, args.quick)
            if args.quick:
                return report(failed)
            measure("proxy", f"{LOADS} forced config loads", app,
                    lambda: app.fab_ok("run", "--cmd", forced_loads(proxy.proxy_dir)))
            measure("proxy", "Caddy container restart", app,
                    lambda: app.vm_docker("restart", *proxy.caddy_ids()))
        finally:
            for app in apps:
                app.tear_down()
            proxy.tear_down()
            vmkit.remove_local_images(images.image)
            vmkit.delete_from_registry(images.name)
    return report(failed)


def report(failed: int) -> int:
    """The table; exit 1 if any request failed behind the proxy (`failed`)."""
    print("\n| mode | switch | requests | failed | 5 s requests | failed | took |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, what, n, bad, slow, slow_bad, took in ROWS:
        print(f"| {mode} | {what} | {n} | {bad} | {slow} | {slow_bad} | {took:.1f} s |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
