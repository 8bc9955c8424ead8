"""Nothing lost, nothing hijacked: the proxy's host names, routes and Caddy itself, the deploy
lock held (not hoped for), and the health checks blaming what failed.

Tests that stop or break Caddy run on a VM of their own (`fault_vms`), with a Caddy of their
own; the others use a Caddy of this module's own on vm1 (its own directory, network, ports).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time

import pytest
from conftest import assert_no_traceback, child_env
from test_proxy import PROXY_IMAGE, caddy, new_proxy  # noqa: F401 - the module's Caddy
from vmkit import GATE, GATED_MIGRATION, App, Proxy, docker, output

from deploy.commands import proxy as pcmd
from deploy.commands import vm as cmd


def failed(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, f"expected exit {code}, got {proc.returncode}:\n" + \
        output(proc)
    assert_no_traceback(proc)
    return output(proc)


def background(app: App, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fabric", *args], cwd=app.repo,
                            env=child_env({**app.env, **(env or {})}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def patient(app: App) -> App:
    """Health waits long enough for this shared, loaded machine (containers took 60 s to turn
    healthy in some runs)."""
    app.env["DEPLOY_HEALTH_TIMEOUT"] = "180"
    return app


def wait_for(condition, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        assert proc is None or proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)


# --------------------------------------------------------------------------- under dash


def test_a_route_with_another_apps_host_is_refused_on_disk(tmp_path):
    from test_vm_helper import dash

    proxy = tmp_path / "proxy dir"
    d = str(proxy)
    head, tail = pcmd.config_parts("off")
    assert dash(pcmd.write_base(d, head, tail), tmp_path, stdin="{}").returncode == 0
    (proxy / "apps/a.json").write_text(json.dumps(pcmd.route("a", ["a.test", "w.a.test"])))
    (proxy / "apps/a.dir").write_text("/srv/a\n")
    taken = dash(pcmd.set_route(d, "b", json.dumps(pcmd.route("b", ["w.a.test"])), "/srv/b",
                                ["w.a.test"]), tmp_path)
    assert taken.returncode == pcmd.HOST_TAKEN_EXIT, taken.stderr
    assert taken.stdout == "a /srv/a w.a.test\n"
    assert not (proxy / "apps/b.json").exists() and not (proxy / "apps/b.dir").exists()
    owners = dash(pcmd.host_owners(d, "b", ["a.test", "b.test"]), tmp_path)
    assert owners.stdout == "a /srv/a a.test\n"
    assert dash(pcmd.host_owners(d, "a", ["a.test"]), tmp_path).stdout == ""  # its own


def test_lock_check_and_the_lock_log_on_disk(tmp_path):
    from test_vm_helper import dash

    ours = json.dumps({"holder": "me@laptop", "time": "2026-01-01T00:00:00Z"})
    assert dash(cmd.acquire_lock(ours), tmp_path).returncode == 0
    assert dash(cmd.check_lock(ours), tmp_path).returncode == 0
    record = json.dumps({"who": "bob@other", "time": "2026-01-01T00:00:05Z", "forced": True})
    assert dash(cmd.break_lock(record), tmp_path).returncode == 0
    assert not (tmp_path / ".deploy/lock").exists()
    lost = dash(cmd.check_lock(ours), tmp_path)
    assert lost.returncode == cmd.LOCK_LOST_EXIT
    assert lost.stdout == f"broken {record}\n"
    assert dash(cmd.unseen_lock_log(), tmp_path).stdout == record + "\n"
    assert dash(cmd.unseen_lock_log(), tmp_path).stdout == ""  # shown once


# --------------------------------------------------------------------------- host names


def test_a_host_name_is_one_apps_until_moved_explicitly(make_app, caddy, images):  # noqa: F811
    first = patient(make_app().use_proxy(caddy))
    first.fab_ok("setup")
    first.deploy(images.v1)
    second = patient(make_app().use_proxy(caddy))
    own_host = second.host

    # setup with another app's host name: refused before anything reaches the VM
    second.env["DEPLOY_PROXY_HOST"] = first.host
    text = failed(second.fab("setup"))
    assert (f"error: the proxy already serves {first.host} for another app (project "
            f"{first.project} in {first.app_dir})") in text, text
    assert "fix: give this app a proxy_host of its own" in text
    assert "`fab setup --take-host`" in text
    assert not second.vm().exists()
    assert first.version()["version"] == "1"

    # set up under its own name, deployed, then pointed at the other's: the deploy refuses
    # in its check, before a backup, migration or container
    second.env["DEPLOY_PROXY_HOST"] = own_host
    second.fab_ok("setup")
    second.deploy(images.v1)
    history = second.history()
    second.env["DEPLOY_PROXY_HOST"] = first.host
    text = failed(second.fab("deploy", f"--tag={images.v2}"))
    assert f"error: the proxy already serves {first.host} for another app" in text, text
    assert second.history() == history
    assert first.version()["version"] == "1"
    assert "answers 200" in first.fab_ok("status")

    # moved on purpose: the other app's route loses the name, and its status says so
    out = second.fab_ok("setup", "--take-host")
    assert f"took {first.host} from project {first.project} ({first.app_dir})" in out, out
    second.deploy(images.v2)
    assert first.version()["version"] == "2"  # first.host now reaches the second app
    status = first.fab_ok("status")
    assert "warning: the proxy has no route for this app" in status, status
    assert "fix: `fab setup` makes it" in status


# --------------------------------------------------------------------------- fab status


def test_status_warns_of_a_missing_or_foreign_upstream(make_app, caddy, images):  # noqa: F811
    app = patient(make_app().use_proxy(caddy))
    other = patient(make_app().use_proxy(caddy))
    for each, tag in ((app, images.v1), (other, images.v2)):
        each.fab_ok("setup")
        each.deploy(tag)
    assert "warning" not in app.fab_ok("status")
    upstream = caddy.path(pcmd.upstream_path(app.project))

    upstream.unlink()  # deleted by hand
    status = app.fab_ok("status")
    assert f"warning: {caddy.proxy_dir}/conf/upstreams/{app.project} is missing" in status, \
        status
    assert f"fix: `fab deploy --tag={images.v1}` starts a fresh container" in status

    foreign = f"{other.container_names()[0]}:8000"
    upstream.write_text(foreign)  # pointed at another app's container
    status = app.fab_ok("status")
    assert (f"warning: the proxy sends {app.host} to {foreign}, which is not a container "
            f"of this app (project {app.project})") in status, status
    assert f"fix: `fab deploy --tag={images.v1}`" in status
    assert app.version()["version"] == "2"  # what users get: the other app

    app.deploy(images.v1)  # the fix it names
    assert app.version()["version"] == "1"
    assert "warning" not in app.fab_ok("status")


# --------------------------------------------------------------------------- Caddy down


@pytest.fixture
def fault_caddy(fault_vms):
    """A Caddy of its own on the first fault VM; a test names it before make_app, so that its
    apps are torn down first (its network cannot go while an app's container is on it)."""
    proxy = Proxy(PROXY_IMAGE, fault_vms[0])
    if not proxy.has_image():
        pytest.skip(f"no {PROXY_IMAGE} image on {fault_vms[0].name}")
    yield proxy
    proxy.tear_down()


def test_a_deploy_starts_a_stopped_caddy_and_names_a_failing_one(fault_caddy, make_app,
                                                                  fault_vms, images):
    app = patient(make_app(vm=fault_vms[0]).use_proxy(fault_caddy))
    app.fab_ok("setup")
    app.deploy(images.v1)
    compose = json.loads(fault_caddy.path("compose.json").read_text())
    assert compose["services"]["caddy"]["restart"] == "unless-stopped"

    # stopped (as `docker stop` does: its restart policy does not bring it back)
    assert fault_caddy.docker("stop", *fault_caddy.caddy_ids()).returncode == 0
    out = app.deploy(images.v2)
    assert "the proxy (Caddy) on" in out and "was exited: every app behind it was down; " \
        "starting it" in out, out
    assert app.version()["version"] == "2"

    # killed in the middle of a switch's health wait: started again, the switch goes on
    app.wait_retired()  # v1's old container gone: a v1 container now is the rollback's
    proc = background(app, "rollback")
    try:
        new = ["ps", "-q", "--filter", f"label=com.docker.compose.project={app.project}",
               "--filter", f"ancestor={images.ref(images.v1)}"]
        wait_for(lambda: app.vm_docker(*new).stdout.strip(), 180, proc)
        assert fault_caddy.docker("kill", *fault_caddy.caddy_ids()).returncode == 0
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out  # Caddy came back (started by the deploy, or Docker)
    assert "fix the app" not in out, out
    assert app.version()["version"] == "1"

    # a Caddy that cannot start: said to be the proxy's failure, not the app's
    fault_caddy.path("conf/caddy.json").write_text("{not json")
    assert fault_caddy.docker("stop", *fault_caddy.caddy_ids()).returncode == 0
    text = failed(app.fab("deploy", f"--tag={images.v2}"))
    assert "error: the proxy (Caddy) is failing" in text, text
    assert "every app behind it is down; nothing was switched" in text
    assert "fix: fix the proxy, not the app: look at `fab proxy logs`" in text
    assert "fix the app" not in text.replace("fix the proxy, not the app", "")
    assert [e["tag"] for e in app.history()] == [images.v1, images.v2, images.v1]


# --------------------------------------------------------------------------- health_url


def test_a_health_url_both_releases_fail_blames_the_setting(make_app, images):
    app = make_app()
    app.fab_ok("setup")
    app.deploy(images.v1)
    wrong = app.vm_url("/no-such-path")
    text = failed(app.fab("deploy", f"--tag={images.v2}",
                          env={"DEPLOY_HEALTH_URL": wrong, "DEPLOY_HEALTH_TIMEOUT": "15"}))
    assert f"{wrong} answered 404 on the VM" in text, text
    assert f"both releases fail health_url {wrong}, so the setting is what is wrong" in text
    assert "fix: set health_url (DEPLOY_HEALTH_URL)" in text
    assert "fix the app" not in text
    assert app.version()["version"] == "1"


def test_a_health_path_the_serving_app_fails_too_blames_the_setting(make_app, caddy,  # noqa: F811
                                                                  images):
    app = make_app().use_proxy(caddy)
    app.fab_ok("setup")
    app.deploy(images.v1)
    text = failed(app.fab("deploy", f"--tag={images.v2}",
                          env={"DEPLOY_HEALTH_PATH": "/no-such-path",
                               "DEPLOY_HEALTH_TIMEOUT": "15"}))
    assert "answers 404 on health_path /no-such-path too, so the setting is what is wrong" \
        in text, text
    assert "fix: set health_path (DEPLOY_HEALTH_PATH)" in text
    assert app.version()["version"] == "1"


# --------------------------------------------------------------------------- the lock


def test_a_deploy_that_lost_its_lock_stops_and_unlock_force_asks(live, images):
    # the migration waits for the test's go (a file in the app's data directory): as long as
    # the test needs, and no longer
    env = {"DEPLOY_LOCK_LEASE": "6", "DEPLOY_MIGRATE_COMMAND": GATED_MIGRATION}
    proc = background(live, "deploy", f"--tag={images.v2}", env=env)
    lock = live.vm(".deploy/lock")
    try:
        wait_for(lambda: (lock / "holder.json").exists(), proc=proc)
        # no terminal, no --yes: refused, the lock stays
        text = failed(live.fab("unlock", "--force", env=env))
        assert "there is no terminal to ask on; the lock is left as it was" in text, text
        assert "fix: run it in a terminal, or add --yes (scripts)" in text
        assert lock.exists()
        # on a terminal, answered "n": refused too
        answer = run_on_tty(live, ["unlock", "--force"], "n\n", env)
        assert "Break it? [y/N]" in answer and "not confirmed" in answer, answer
        assert lock.exists()
        live.fab_ok("unlock", "--force", "--yes", env=env)
        # another deploy takes the lock while the first one migrates
        lock.mkdir()
        (lock / "holder.json").write_text(json.dumps(
            {"holder": "bob@laptop", "time": "T", "tag": "x", "action": "deploy"}) + "\n")
        live.vm(GATE).touch()  # the migration ends now, and the deploy finds bob's lock
        out = proc.communicate(timeout=180)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert (f"error: the deploy lock on {live.machine.address} was taken by bob@laptop since T "
            "deploy of x after it was broken by") in out, out
    assert f"nothing more was changed; {images.v1} is serving" in out
    assert [e["tag"] for e in live.history()] == [images.v1]  # nothing recorded
    assert live.version()["version"] == "1"
    assert (lock / "holder.json").exists()  # bob's lock: not released by the loser
    bob = (lock / "holder.json").read_text()
    assert "bob@laptop" in bob
    live.fab_ok("unlock", "--yes")  # bob's lease file is missing: stale
    out = live.deploy(images.v2)
    assert "cleared the deploy lock at" in out and "with `fab unlock --force`" in out, out
    assert live.history()[-1]["previous"] == images.v1


def run_on_tty(app: App, args: list[str], answer: str, env: dict[str, str]) -> str:
    """`fab ARGS` with a terminal as stdin, `answer` typed into it; its output."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fabric", *args], cwd=app.repo,
                            env=child_env({**app.env, **env}), stdin=child,
                            stdout=child, stderr=child)
    os.close(child)
    os.write(main, answer.encode())
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(main)
    return b"".join(chunks).decode(errors="replace")


# --------------------------------------------------------------------------- inv smoke


def test_smoke_refuses_an_image_without_a_shell(make_app, images, tmp_path):
    app = make_app()
    ref = images.ref(f"{images.v1}-nosh")
    context = tmp_path / "nosh"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {images.ref(images.v1)}\n"
        'RUN ["/bin/rm", "-f", "/bin/sh", "/usr/bin/sh", "/bin/dash", "/usr/bin/dash"]\n')
    built = docker("build", "--quiet", "-t", ref, str(context), timeout=600)
    assert built.returncode == 0, output(built)
    try:
        text = failed(app.inv("smoke", f"--version={images.v1}-nosh"))
        assert f"error: {ref} has no usable /bin/sh" in text, text
        assert "migrate_command ('alembic upgrade head')" in text
        assert "fix: build the image on a base that has /bin/sh" in text
        assert "smoke: OK" in text  # the smoke command itself ran (no shell needed)
        # without a migrate command and with an exec-form healthcheck, no shell is needed
        ok = app.inv("smoke", f"--version={images.v1}-nosh", env={"DEPLOY_MIGRATE_COMMAND": ""})
        assert ok.returncode == 0, output(ok)
    finally:
        docker("image", "rm", "--force", ref)
