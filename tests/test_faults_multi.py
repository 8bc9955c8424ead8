"""The fault campaign over several hosts: a roles plan (three web hosts, each behind its own
Caddy, one Postgres on the primary that every host's app reaches over the network, as the
README's roles layout says) and a Swarm stack. A fault lands while a deploy works on one host:
the SSH connection to a non-primary host cut during its switch, `fab deploy` sent SIGTERM
then, the SSH connection cut (or SIGTERM) during the migration on the primary, the database
host's Docker engine stopped while another host switches. Each fault checks what a user sees:
a non-zero exit with `error:` and `fix:` naming the host, every host serving a good version
through its Caddy (a probe on each), every row in the one database, the lock free, `fab status`
true for each host, and the same deploy run again converging (exit 0, every host on the new
version). Rows go to the campaign's table (faultkit.RESULTS), printed with test_faults.py's.

The roles faults break VMs of their own (vm10..vm12, `roles_fault_vms`). The Swarm faults run
on the swarm of tests/test_swarm_live.py (vm6, vm7), which other tests use too: they never
stop its engines or its sshd listener; the SSH cut kills only the sshd session process that
serves this deploy's own connection (faultkit.cut_ssh).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from types import TracebackType

import pytest
from conftest import EXAMPLE_POSTGRES, sandbox_up
from faultkit import (
    RESULTS,
    Probe,
    Row,
    Running,
    cut_ssh,
    first_message,
    kill_engine,
    lock_state,
    on_vm,
    restore_engine,
    served,
    shorten,
    start_fab,
    stop_all,
    wait_until,
)
from test_swarm_live import (  # noqa: F401  (fixtures: the swarm and its Caddy image)
    CADDYFILE,
    STACK_COMPOSE,
    caddy_image,
    served_tags,
    swarm,
    vm_docker,
    wait_version,
)
from vmkit import App, Images, Proxy, make_app_repo, output, unique

from sandbox.ports import free_port
from sandbox.vms import Vm

ROLES_FAULT_VMS = (10, 11, 12)  # web1 (primary, the database), web2, web3: theirs alone
ROWS = ("row via web1", "row via web2", "row via web3")  # one database: any host writes it
SLOW_MIGRATION = {"DEPLOY_MIGRATE_COMMAND": "sleep 3 && alembic upgrade head"}
# A web host whose database is gone never turns healthy: fail in 12 s, not the default 120.
SHORT_HEALTH = {"DEPLOY_HEALTH_TIMEOUT": "12"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def roles_fault_vms(sandbox) -> tuple[Vm, ...]:
    """Three VMs of their own for the roles faults (their engines and sshd sessions break)."""
    sandbox_up(*ROLES_FAULT_VMS)
    return tuple(sandbox.vm(i) for i in ROLES_FAULT_VMS)


def roles_compose(text: str, db_host: str, db_port: int) -> str:
    """example-postgres's compose.proxy.yaml for a roles plan: the database service under a
    profile (the tool starts it by name on the database host only) publishing its port on
    that host's address, the app reaching it there, no depends_on; the app checked every
    500 ms (the database keeps its 2 s: only its start waits for it)."""
    out = text.replace("@db:5432/app", f"@{db_host}:{db_port}/app")
    out = out.replace("    depends_on:\n      db:\n        condition: service_healthy\n", "")
    out = out.replace("  db:\n    image:", f'  db:\n    profiles: ["database"]\n    ports: '
                      f'["{db_host}:{db_port}:5432"]\n    image:')
    out = out.replace("interval: 2s", "interval: 500ms", 1)
    assert out.count(f"{db_host}:{db_port}") == 2 and "depends_on" not in out, out
    return out


@pytest.fixture(scope="module")
def pg_roles(pg_images, sandbox, roles_fault_vms, tmp_path_factory) -> Iterator[list[App]]:
    """The Postgres example as a roles plan over vm10..vm12 (web role, batches of one, no
    wait), each host behind its own Caddy, the database on vm10; v1 deployed and one row
    written through each host. A view of the app per host (same app_dir, its own VM)."""
    web1, web2, web3 = roles_fault_vms
    root = tmp_path_factory.mktemp("pg-roles")
    repo = make_app_repo(root / "app", EXAMPLE_POSTGRES)
    app = App.create(repo, pg_images, root / "xdg-cache", sandbox, vm=web1)
    proxies = [Proxy("caddy:2", web1)]
    proxies += [dataclasses.replace(proxies[0], machine=vm) for vm in (web2, web3)]
    app.use_proxy(proxies[0])
    compose = repo / "compose.proxy.yaml"
    compose.write_text(roles_compose(compose.read_text(), web1.address, free_port()))
    with (repo / "deploy.toml").open("a") as toml:
        toml.write('\nprimary_role = "web"\nbatch_limit = 1\nbatch_wait = 0\n[roles.web]\n'
                   f'hosts = ["{web1.address}", "{web2.address}", "{web3.address}"]\n')
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "roles, the database on web1"], cwd=repo,
                   check=True)
    views = [app] + [dataclasses.replace(app, machine=vm, tunnel=None, proxy=proxy)
                     for vm, proxy in ((web2, proxies[1]), (web3, proxies[2]))]
    try:
        app.fab_ok("setup")
        app.deploy(pg_images.v1)
        for view, name in zip(views, ROWS, strict=True):
            view.post_item(name)
        assert app.item_names() == list(ROWS), "every host writes the one database on web1"
        assert not any(v.containers(service="db") for v in views[1:]), "one database"
        yield views
    finally:
        for view in views:
            view.tear_down()
        for proxy in proxies:
            proxy.tear_down()


def reset(views: list[App], images: Images, schema: bool = False) -> None:
    """Every host back on v1 (the lock free, no migration left running); with `schema`, the
    database back on revision 0001 too (v2's column dropped in SQL, the rows kept), so that
    the next deploy of v2 migrates again."""
    primary = views[0]
    if primary.vm(".deploy/lock").exists():
        primary.fab_ok("unlock", "--force", "--yes")
    wait_until(lambda: not leftover_migrations(primary), 120, 0.5, "a migration left running")
    for view in views:
        assert view.wait_http("/health", timeout=60) == 200, view.machine.name
    if any(served(v) != "1" or v.history()[-1]["tag"] != images.v1 for v in views):
        primary.fab_ok("rollback", f"--tag={images.v1}")
    if schema:
        primary.psql("ALTER TABLE items DROP COLUMN IF EXISTS note; "
                     "UPDATE alembic_version SET version_num = '0001'")
    assert [served(v) for v in views] == ["1", "1", "1"]
    assert primary.item_names()[: len(ROWS)] == list(ROWS)


def leftover_migrations(app: App) -> list[str]:
    return app.vm_docker("ps", "-q", "--filter", f"label=com.docker.compose.project="
                         f"{app.project}", "--filter", "label=com.docker.compose.oneoff=True"
                         ).stdout.split()


# --------------------------------------------------------------------------- catching a host


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def running_on(vm: Vm, *needles: str) -> list[int]:
    """pids on `vm` (in its network namespace: every VM shares this machine's /proc) whose
    command line holds every one of `needles`."""
    inode = os.stat(vm.netns_file).st_ino
    found = []
    for pid in on_vm(vm, needles[0]):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            if all(n in args for n in needles) and netns_inode(pid) == inode:
                found.append(pid)
        except OSError:
            continue
    return found


def switching(view: App) -> Callable[[], bool]:
    """True while the host of `view` runs the blue/green switch's `compose up --scale`."""
    return lambda: bool(running_on(view.machine, f"--project-name {view.project}", "--scale"))


def migrating(view: App) -> Callable[[], bool]:
    """True while the host of `view` runs the migration's one-off container."""
    return lambda: bool(running_on(view.machine, f"--project-name {view.project}", " run "))


# --------------------------------------------------------------------------- one fault


def versions(views: list[App]) -> str:
    return "/".join(served(v) for v in views)


class MultiFault:
    """One fault over the roles plan: state before, a probe on each host's Caddy, the state
    after, one row of the campaign's table."""

    def __init__(self, views: list[App], name: str) -> None:
        self.views = views
        self.primary = views[0]
        self.row = Row(name, "postgres roles")
        self.probes = [Probe(v.url("/version"), headers={"Host": v.host}) for v in views]
        self.names_before: list[str] = []
        self.started = 0.0
        self.took = 0.0  # seconds the faulted command ran

    def __enter__(self) -> MultiFault:
        self.row.before = versions(self.views)
        self.names_before = self.primary.item_names()
        self.row.rows_before = str(len(self.names_before))
        for probe in self.probes:
            probe.__enter__()
            probe.stage = "during"
        self.started = time.monotonic()
        return self

    def done(self, code: int, out: str) -> None:
        self.took = time.monotonic() - self.started
        for probe in self.probes:
            probe.stage = "after"
        self.row.exit = str(code)
        self.row.message = first_message(error_line(out) or out)
        self.row.during = "; ".join(
            f"{v.machine.name} {p.summary('during')}" for v, p in zip(self.views, self.probes,
                                                                     strict=True))
        self.row.requests = sum(len(p.of("during")) for p in self.probes)
        self.row.failed = sum(p.failures("during") for p in self.probes)

    def settle(self) -> None:
        """Every host answers again; what each serves, the rows, the lock."""
        for view in self.views:
            assert view.wait_http("/health", timeout=60) == 200, \
                f"{view.machine.name} is not healthy"
        self.row.after = versions(self.views)
        self.row.rows_after = str(len(self.primary.item_names()))
        self.row.lock = lock_state(self.primary)

    def rows_intact(self) -> None:
        names = self.primary.item_names()
        assert names[: len(self.names_before)] == self.names_before, (self.names_before, names)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stop_all()
        for probe in self.probes:
            probe.__exit__()
        self.row.result = "ok" if exc_type is None else "FAILED"
        RESULTS.append(self.row)


def error_line(out: str) -> str:
    """The `error:` line of the output (the per-host report and phase lines come before)."""
    return next((line for line in out.splitlines() if line.startswith("error:")), "")


def error_text(out: str) -> str:
    """The whole error message: from `error:` to its `fix:` line (it may span lines)."""
    return out[out.index("error:"):].split("\n  fix:", 1)[0] if "error:" in out else ""


def failed_cleanly(out: str, code: int, expected: int = 1) -> str:
    assert code == expected, f"expected exit {expected}, got {code}:\n{out}"
    assert "Traceback" not in out, out
    assert re.search(r"^\s*fix: \S", out, re.M), f"no fix line:\n{out}"
    text = error_text(out)
    assert text, out
    return text


def status_by_host(out: str) -> dict[str, str]:
    """HOST -> its part of `fab status` (each headed `== HOST (role NAME)`)."""
    parts = re.split(r"^== (\S+) \(role \w+\)$", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def status_true(views: list[App], images: Images) -> None:
    """`fab status` names, for each host, the release it serves, and the lock as it is."""
    out = views[0].fab_ok("status")
    parts = status_by_host(out)
    assert sorted(parts) == sorted(v.machine.address for v in views), out
    for view in views:
        part = parts[view.machine.address]
        tag = {"1": images.v1, "2": images.v2}[served(view)]
        assert re.search(rf"^release:\s+{re.escape(tag)}$", part, re.M), (view.machine.name,
                                                                          out)
        assert "not the recorded release" not in part, out
    assert re.search(r"^lock:\s+free$", parts[views[0].machine.address], re.M), out


def converges(fault: MultiFault, images: Images, env: dict[str, str] | None = None,
              what: str = "re-run") -> None:
    """The same deploy again: exit 0, every host on v2, no row lost, the lock free."""
    views = fault.views
    started = time.monotonic()
    proc = views[0].fab("deploy", f"--tag={images.v2}", env=env)
    took = time.monotonic() - started
    out = output(proc)
    assert proc.returncode == 0, out
    assert [served(v) for v in views] == ["2", "2", "2"], out
    assert [v.history()[-1]["tag"] for v in views] == [images.v2] * 3
    assert views[0].db_revision() == "0002"
    fault.rows_intact()
    assert lock_state(views[0]) == "free"
    status_true(views, images)
    fault.row.then = (f"(fab ran {fault.took:.0f}s) {what}: exit 0 in {took:.0f}s, all serve "
                      f"2, {len(views[0].item_names())} rows")


def good_everywhere(fault: MultiFault, allowed: tuple[str, ...] = ("1", "2")) -> None:
    fault.settle()
    assert all(v in allowed for v in fault.row.after.split("/")), fault.row.after
    fault.rows_intact()
    assert lock_state(fault.primary) == "free"
    assert not any(v.vm(".deploy/lock").exists() for v in fault.views[1:]), \
        "the one lock is on the primary"


# --------------------------------------------------------------------------- roles faults


def test_roles_ssh_cut_during_the_migration_on_the_primary(pg_roles, pg_images) -> None:
    views, images = pg_roles, pg_images
    web1 = views[0]
    reset(views, images)
    with MultiFault(views, "roles: SSH to the primary cut during migrate") as fault:
        run = start_fab(web1, "deploy", f"--tag={images.v2}", env=SLOW_MIGRATION)
        run.when(migrating(web1), lambda: cut_ssh(run.pid, web1.machine), "the migration")
        code, out = run.wait()
        fault.done(code, out)
        line = failed_cleanly(out, code)
        assert f"SSH connection to {web1.machine.address} was lost" in line, out
        assert "during migrate" in line and "still serving" in line, out
        assert "run the same deploy again" in out
        good_everywhere(fault, allowed=("1",))  # no host switched
        status_true(views, images)
        converges(fault, images, SLOW_MIGRATION)


def test_roles_sigterm_during_the_migration_on_the_primary(pg_roles, pg_images) -> None:
    views, images = pg_roles, pg_images
    web1 = views[0]
    reset(views, images, schema=True)
    with MultiFault(views, "roles: SIGTERM to fab during migrate") as fault:
        run = start_fab(web1, "deploy", f"--tag={images.v2}", env=SLOW_MIGRATION)
        run.when(migrating(web1), lambda: run.signal(signal.SIGTERM), "the migration")
        code, out = run.wait()
        fault.done(code, out)
        line = failed_cleanly(out, code, expected=128 + signal.SIGTERM)
        assert "interrupted (SIGTERM) during migrate" in line, out
        assert web1.machine.address in line and "lock was released" in line, out
        good_everywhere(fault, allowed=("1",))
        status_true(views, images)
        converges(fault, images, SLOW_MIGRATION)


def test_roles_ssh_cut_to_a_non_primary_host_during_its_switch(pg_roles, pg_images) -> None:
    views, images = pg_roles, pg_images
    web1, web2 = views[0], views[1]
    reset(views, images)
    with MultiFault(views, "roles: SSH to web2 cut during its switch") as fault:
        run = start_fab(web1, "deploy", f"--tag={images.v2}")
        run.when(switching(web2), lambda: cut_ssh(run.pid, web2.machine), "web2's switch")
        code, out = run.wait()
        fault.done(code, out)
        line = failed_cleanly(out, code)
        assert line.startswith(f"error: {web2.machine.address} (web): "), out
        assert f"SSH connection to {web2.machine.address} was lost" in line, out
        assert f"hosts serving {images.v2}: {web1.machine.address} (web)" in line, out
        good_everywhere(fault)
        # web1 switched before the fault and keeps v2; web3's batch never started
        assert [served(web1), served(views[2])] == ["2", "1"], fault.row.after
        status_true(views, images)
        converges(fault, images)


def test_roles_sigterm_while_a_non_primary_host_switches(pg_roles, pg_images) -> None:
    views, images = pg_roles, pg_images
    web1, web2 = views[0], views[1]
    reset(views, images)
    with MultiFault(views, "roles: SIGTERM to fab during web2's switch") as fault:
        run = start_fab(web1, "deploy", f"--tag={images.v2}")
        run.when(switching(web2), lambda: run.signal(signal.SIGTERM), "web2's switch")
        code, out = run.wait()
        fault.done(code, out)
        line = failed_cleanly(out, code, expected=128 + signal.SIGTERM)
        assert line.startswith(f"error: {web2.machine.address} (web): interrupted (SIGTERM)"), \
            out
        good_everywhere(fault)
        assert [served(web1), served(web2), served(views[2])] == ["2", "1", "1"], out
        status_true(views, images)
        converges(fault, images)


def test_roles_database_host_engine_down_during_a_web_hosts_switch(pg_roles, pg_images
                                                                   ) -> None:
    views, images = pg_roles, pg_images
    web1, web2 = views[0], views[1]
    reset(views, images)
    with MultiFault(views, "roles: database host's engine down during web2's switch") as fault:
        run = start_fab(web1, "deploy", f"--tag={images.v2}", env=SHORT_HEALTH)
        try:
            run.when(switching(web2), lambda: kill_engine(web1.machine), "web2's switch")
            code, out = run.wait()
        finally:
            # SIGTERM stops the containers cleanly: their restart policy brings back those that
            # ran (not the one the switch of web1 had retired, as a list taken before would)
            restore_engine(web1.machine)
        fault.done(code, out)
        line = failed_cleanly(out, code)
        assert line.startswith(f"error: {web2.machine.address} (web): {images.v2} did not "
                               "turn healthy"), out
        assert f"hosts serving {images.v2}: {web1.machine.address} (web)" in line, out
        assert "database unreachable" in line, "the app's own words on why it is unhealthy"
        # the report, made while web1's engine was down, says so: not `missing`
        assert re.search(rf"{re.escape(web1.machine.address)} \(web\)\s+serves "
                         rf"{images.v2}\s+\[new\]\s+unknown \(the Docker engine does not "
                         r"answer\)", out), out
        good_everywhere(fault)
        assert [served(web1), served(web2), served(views[2])] == ["2", "1", "1"], out
        status_true(views, images)
        converges(fault, images, SHORT_HEALTH, "engine back, re-run")


# --------------------------------------------------------------------------- Swarm


@pytest.fixture
def swarm_faults(swarm):  # noqa: F811  (the swarm fixture imported above)
    """The swarm of test_swarm_live.py, for faults that never stop its engines or sshd."""
    return swarm


@pytest.fixture
def swarm_app(make_app, swarm_faults, caddy_image, images) -> Iterator[App]:  # noqa: F811
    """A stack on the swarm (the app on the manager, Caddy on the worker), v1 deployed, three
    rows written."""
    manager, worker = swarm_faults
    app = make_app(vm=manager)
    stack = unique("sf")
    (app.repo / "compose.yaml").write_text(STACK_COMPOSE.replace("CADDY", caddy_image))
    with (app.repo / "deploy.toml").open("a") as toml:
        toml.write(f'\ntarget = "swarm"\nstack = "{stack}"\nswarm_timeout = 120\n')
    subprocess.run(["git", "commit", "-qam", "swarm"], cwd=app.repo, check=True)
    app.fab_ok("setup")
    app.vm("Caddyfile").write_text(CADDYFILE)
    app.stack = stack  # type: ignore[attr-defined]
    app.proxy_url = f"http://{worker.address}:{app.port}"  # type: ignore[attr-defined]
    try:
        app.fab_ok("deploy", f"--tag={images.v1}")
        assert wait_version(app.proxy_url, "1") == "1"  # type: ignore[attr-defined]
        for name in ("first row", "second row", "third row"):  # through the stack's Caddy
            request = urllib.request.Request(
                f"{app.proxy_url}/items", data=json.dumps({"name": name}).encode(),  # type: ignore[attr-defined]
                headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
        yield app
    finally:
        vm_docker(manager, "stack", "rm", stack)
        for _ in range(60):
            if not vm_docker(manager, "network", "ls", "-q", "--filter",
                             f"label=com.docker.stack.namespace={stack}").stdout.strip():
                break
            time.sleep(1)


def swarm_settled(app: App, swarm_vms: tuple[Vm, ...]) -> str:
    """The one tag every running task of the app service runs, once Swarm is done."""
    name = f"{app.stack}_app"  # type: ignore[attr-defined]

    def one() -> str:
        tags = served_tags(app, swarm_vms)
        state = vm_docker(swarm_vms[0], "service", "inspect", "--format",
                          "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", name).stdout
        return next(iter(tags)) if len(tags) == 1 and "updating" not in state else ""

    return str(wait_until(one, 120, 0.5, "the service to settle on one version"))


@pytest.mark.parametrize("fault", ["ssh-cut", "SIGTERM"])
def test_swarm_fault_during_stack_deploy(swarm_app, swarm_faults, images, fault) -> None:
    app, manager = swarm_app, swarm_faults[0]
    url = app.proxy_url  # type: ignore[attr-defined]
    row = Row(f"swarm: {fault} during stack deploy", "sqlite swarm")
    names = app.item_names()
    row.before, row.rows_before = "1", str(len(names))
    probe = Probe(f"{url}/version")
    try:
        with probe:
            probe.stage = "during"
            run: Running = start_fab(app, "deploy", f"--tag={images.v2}")
            # `docker stack deploy STACK`, then the polls of STACK_app until Swarm is done
            stack = app.stack  # type: ignore[attr-defined]
            stacking = lambda: bool(running_on(manager, stack))  # noqa: E731
            action = (lambda: cut_ssh(run.pid, manager)) if fault == "ssh-cut" else \
                (lambda: run.signal(signal.SIGTERM))
            run.when(stacking, action, "`docker stack deploy`", interval=0.005)
            code, out = run.wait()
            probe.stage = "after"
            row.exit, row.message = str(code), first_message(error_line(out) or out)
            row.during = probe.summary("during")
            row.requests, row.failed = len(probe.of("during")), probe.failures("during")
        line = failed_cleanly(out, code, 1 if fault == "ssh-cut" else 128 + signal.SIGTERM)
        assert f"during the stack deploy of {images.v2}; nothing was recorded" in line, out
        what = "interrupted (SIGTERM)" if fault == "SIGTERM" else \
            f"the SSH connection to {manager.address} was lost"
        assert line.startswith(f"error: {what}"), out
        tag = swarm_settled(app, swarm_faults)
        assert tag in (images.v1, images.v2)
        version = wait_version(url, {images.v1: "1", images.v2: "2"}[tag])
        assert version == {images.v1: "1", images.v2: "2"}[tag], version
        row.after = version
        assert app.item_names()[: len(names)] == names
        row.rows_after = str(len(app.item_names()))
        row.lock = lock_state(app)
        assert row.lock == "free", row.lock
        status = app.fab_ok("status")
        recorded = app.history()[-1]["tag"]
        assert recorded == images.v1, "nothing recorded for the cut-short deploy"
        if tag == recorded:
            assert f"serving (1/1 task(s) running {images.ref(tag)})" in status, status
        else:  # Swarm went on with the update after the tool was gone: status says so
            assert f"serving {images.ref(tag)}, not the recorded release {recorded}" in \
                status, status
        proc = app.fab("deploy", f"--tag={images.v2}")
        again = output(proc)
        assert proc.returncode == 0, again
        assert served_tags(app, swarm_faults) == {images.v2}
        assert wait_version(url, "2") == "2"
        assert app.history()[-1]["tag"] == images.v2 and lock_state(app) == "free"
        assert app.item_names()[: len(names)] == names
        row.then = shorten(f"status: {tag} serving; re-run: exit 0, serves 2, "
                           f"{len(app.item_names())} rows")
        row.result = "ok"
    finally:
        stop_all()
        RESULTS.append(row)
