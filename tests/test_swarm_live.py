"""`target = "swarm"` against a real swarm of two sandbox VMs: vm6 the
manager, vm7 a worker, each VM's own engine joined over its own address; the app's tasks on the
manager (SQLite), Caddy on the worker reaching them across the overlay network by DNS
(`endpoint_mode: dnsrr`, `dynamic a tasks.app`) on a host-mode port. v1 -> v2 -> rollback to v1
with a probe at 100 requests/s through Caddy seeing no failed request, and an image that never
turns healthy rolled back by Swarm itself and reported.

These two VMs are the swarm's alone: a swarm is never left (`docker swarm leave` breaks name
resolution for containers created before it, moby#45144), so no other test may use them.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
from conftest import output  # noqa: E402
from vmkit import REGISTRY, Probe, delete_from_registry, docker, unique  # noqa: E402

SWARM_VMS = (6, 7)  # manager, worker: used by no other test

STACK_COMPOSE = """\
services:
  app:
    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"
    env_file: app.env
    environment:
      DATABASE_URL: "sqlite:////data/app.db"
    volumes: ["./data:/data"]
    stop_grace_period: 10s
    healthcheck:
      test:
        - CMD
        - python
        - -I
        - -S
        - healthcheck.py
        - http://127.0.0.1:8000/health
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 3s
    deploy:
      placement:
        constraints: ["node.role == manager"]
  proxy:
    image: "CADDY"
    ports: ["${APP_PORT}:80"]
    configs:
      - source: caddyfile
        target: /etc/caddy/Caddyfile
    deploy:
      placement:
        constraints: ["node.role == worker"]
configs:
  caddyfile:
    file: ./Caddyfile
"""

CADDYFILE = """\
{
\tadmin off
}
:80 {
\treverse_proxy {
\t\tdynamic a {
\t\t\tname tasks.app
\t\t\tport 8000
\t\t\trefresh 1s
\t\t}
\t\tlb_try_duration 5s
\t\ttransport http {
\t\t\tdial_timeout 500ms
\t\t}
\t}
}
"""


def vm_docker(vm, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(vm.docker(*args), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def swarm(sandbox):
    """vm6 a manager and vm7 a worker of one swarm (made once; left in place)."""
    from conftest import sandbox_up

    sandbox_up(*SWARM_VMS)  # VMs reach each other: swarm's ports, VXLAN
    manager, worker = (sandbox.vm(i) for i in SWARM_VMS)
    state = vm_docker(manager, "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state != "active":
        init = vm_docker(manager, "swarm", "init", "--advertise-addr", manager.address)
        assert init.returncode == 0, init.stderr
    state = vm_docker(worker, "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state != "active":
        token = vm_docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
        join = vm_docker(worker, "swarm", "join", "--advertise-addr", worker.address,
                         "--token", token, f"{manager.address}:2377")
        assert join.returncode == 0, join.stderr
    nodes = vm_docker(manager, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
    assert sorted(nodes.split("\n")[:2]) == ["vm6 Ready", "vm7 Ready"], nodes
    return manager, worker


@pytest.fixture(scope="module")
def caddy_image(swarm):
    """caddy:2 from the registry (a stack resolves images there; Docker Hub is not reachable)."""
    name = unique("caddy-")
    ref = f"{REGISTRY}/{name}:2"
    assert docker("tag", "caddy:2", ref).returncode == 0
    assert docker("push", "--quiet", ref).returncode == 0
    yield ref
    docker("image", "rm", ref)
    delete_from_registry(name)


@pytest.fixture
def stack_app(make_app, swarm, caddy_image):
    manager, worker = swarm
    app = make_app(vm=manager)
    stack = unique("s")
    (app.repo / "compose.yaml").write_text(STACK_COMPOSE.replace("CADDY", caddy_image))
    with (app.repo / "deploy.toml").open("a") as toml:
        toml.write(f'\ntarget = "swarm"\nstack = "{stack}"\nswarm_timeout = 120\n')
    subprocess.run(["git", "commit", "-qam", "swarm"], cwd=app.repo, check=True)
    app.fab_ok("setup")
    app.vm("Caddyfile").write_text(CADDYFILE)  # what the stack's config reads on the manager
    app.stack = stack
    app.proxy_url = f"http://{worker.address}:{app.port}"
    yield app
    vm_docker(manager, "stack", "rm", stack)
    for _ in range(60):  # its tasks and network go before the app's directory does
        if not vm_docker(manager, "network", "ls", "-q", "--filter",
                         f"label=com.docker.stack.namespace={stack}").stdout.strip():
            break
        time.sleep(1)


def get_version(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(f"{url}/version", timeout=timeout) as response:
        return str(json.load(response)["version"])


def wait_version(url: str, want: str, timeout: float = 90) -> str:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            last = get_version(url, timeout=2)
            if last == want:
                return last
        except (OSError, ValueError, http.client.HTTPException) as exc:
            last = str(exc)
        time.sleep(0.5)
    return last


@dataclass
class StackProxy:
    """The stack's own Caddy (on the worker), as vmkit's Probe asks an app."""

    base: str

    def request(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(f"{self.base}{path}")


def probe(app) -> Probe:
    """GET /version at 100/s through the stack's Caddy while the block runs (at most 300 s)."""
    return Probe(StackProxy(app.proxy_url), rate=100, limit=300)  # type: ignore[arg-type]


def served_tags(app, swarm) -> set[str]:
    """The tags the app service's running tasks run, as the manager's engine says."""
    manager, _ = swarm
    ps = vm_docker(manager, "service", "ps", "--filter", "desired-state=running", "--format",
                   "{{.Image}}", f"{app.stack}_app").stdout.split()
    return {ref.split("@")[0].rsplit(":", 1)[-1] for ref in ps}


def test_swarm_v1_v2_rollback_with_no_failed_request_and_swarms_own_rollback(
        stack_app, swarm, images, record_property) -> None:
    app = stack_app
    v1, v2 = images.v1, images.v2

    first = app.fab_ok("deploy", f"--tag={v1}")
    assert f"1/1 task(s) running {images.ref(v1)}" in first
    assert wait_version(app.proxy_url, "1") == "1", "Caddy on vm7 reaches the task on vm6"
    assert app.history()[-1]["tag"] == v1

    # An image that never turns healthy: Swarm rolls it back by itself; v1 never stops serving.
    with probe(app) as bad_probe:
        bad = app.fab("deploy", f"--tag={images.unhealthy}")
        time.sleep(2)  # what comes right after counts too
    text = output(bad)
    assert bad.returncode == 1, text
    assert f"error: {images.unhealthy} did not run healthy; Swarm rolled the service back to " \
           f"{v1}" in text
    assert "its last health check: http://127.0.0.1:8000/health: " in text, \
        "the failed task's check is shown"
    assert served_tags(app, swarm) == {v1}
    assert [e["tag"] for e in app.history()] == [v1], "nothing recorded for the failed image"
    assert app.release_env()["DEPLOY_TAG"] == v1
    assert bad_probe.failed == [] and bad_probe.versions() == ["1"], bad_probe.summary()

    with probe(app) as up_probe:
        out = app.fab_ok("deploy", f"--tag={v2}")
        time.sleep(2)
    assert "task " in out and f"running {images.ref(v2)}" in out
    assert up_probe.failed == [], up_probe.summary()
    assert up_probe.versions()[0] == "1" and up_probe.versions()[-1] == "2", up_probe.summary()
    assert served_tags(app, swarm) == {v2}
    assert app.db_revision() == "0002", "migrated before the switch, on the manager"
    recorded = app.history()[-1]
    assert (recorded["tag"], recorded["migrated"]) == (v2, True)
    assert recorded["backup"] in app.backups(), (recorded, app.backups())

    with probe(app) as back_probe:
        app.fab_ok("rollback", f"--tag={v1}")
        time.sleep(2)
    assert back_probe.failed == [], back_probe.summary()
    assert back_probe.versions()[-1] == "1"
    assert served_tags(app, swarm) == {v1}
    assert [(e["tag"], e["action"]) for e in app.history()] == [
        (v1, "deploy"), (v2, "deploy"), (v1, "rollback")]

    status = app.fab_ok("status")
    assert f"swarm:     {app.stack}_app: serving (1/1 task(s) running {images.ref(v1)})" \
        in status, status
    assert re.search(rf" {re.escape(v1)}: Running on \S+", status), status
    assert "health:" not in status  # compose's view of a stack: `missing`
    logs = app.fab("logs", "--tail=20")
    assert logs.returncode == 0 and "GET /version" in logs.stdout, logs.stdout + logs.stderr
    for name, done in (("unhealthy", bad_probe), ("v1->v2", up_probe),
                        ("rollback", back_probe)):
        record_property(name, done.summary())
        print(f"{name}: {done.summary()}")
