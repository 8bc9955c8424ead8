"""The remote half's safety against the sandbox VM: the compose contract and moving
tags, recorded digests, one compose project per app directory, the health check asked from the
VM, revisions from the database, signals, a dead network, and the lock's lease.

Fixtures (sandbox, images, make_app, app, live) come from conftest.py.
"""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import answering_200, assert_no_traceback, child_env
from vmkit import (
    GATE,
    GATED_MIGRATION,
    REGISTRY,
    checked,
    delete_from_registry,
    docker,
    output,
    remove_local_images,
    unique,
)

from deploy.commands import vm as cmd

HEALTH_TIMEOUT = {"DEPLOY_HEALTH_TIMEOUT": "15"}


def failed(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, f"expected exit {code}, got {proc.returncode}:\n" + \
        output(proc)
    assert_no_traceback(proc)
    return output(proc)


def background(app, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fabric", *args], cwd=app.repo,
                            env=child_env({**app.env, **(env or {})}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        assert proc is None or proc.poll() is None, proc.communicate()[0]
        time.sleep(0.01)


# --------------------------------------------------------------------------- 6: the contract


def test_a_compose_file_naming_the_image_its_own_way_is_refused_then_followed(app, images):
    """The image came from other variables: the deploy said `deployed T` while :latest ran.
    Now it refuses before anything changes; with image_variable/tag_variable it deploys."""
    compose = app.repo / "compose.yaml"
    compose.write_text(compose.read_text().replace(
        '"${DEPLOY_IMAGE:-127.0.0.1:5000/example}:${DEPLOY_TAG:-latest}"',
        '"${APP_IMAGE:-127.0.0.1:5000/example}:${VERSION:-latest}"'))
    app.fab_ok("setup")
    before = app.snapshot()
    out = failed(app.fab("deploy", f"--tag={images.v1}"))
    assert f"not the release {images.ref(images.v1)}: nothing was changed" in out, out
    assert "image_variable" in out
    assert app.snapshot() == before and app.containers() == []

    env = {"DEPLOY_IMAGE_VARIABLE": "APP_IMAGE", "DEPLOY_TAG_VARIABLE": "VERSION"}
    app.fab_ok("setup", env=env)
    app.deploy(images.v1, env=env)
    assert app.serving_image() == images.ref(images.v1)
    assert app.release_env()["VERSION"] == images.v1


def test_latest_is_refused_before_any_connection(live, sshd):
    for args in (["deploy", "--tag=latest"], ["rollback", "--tag=latest"]):
        proc, connections, lines = sshd.measure(lambda args=args: live.fab(*args),
                                                "connections", 0)
        out = failed(proc)
        assert "'latest' is a tag every push moves" in out
        assert connections == 0, "\n".join(lines)


def test_rollback_brings_back_the_recorded_digest_even_if_the_tag_was_pushed_again(
        make_app, images):
    """v1 re-pushed with v2's image after it was deployed: a rollback to v1 still brings back
    the image v1 ran, by its recorded digest. On a copy of the images under a name of its
    own: the session's tags are pulled by other workers meanwhile."""
    image = f"{REGISTRY}/{unique('retag-')}"
    for tag in (images.v1, images.v2):
        checked(docker("tag", images.ref(tag), f"{image}:{tag}"))
        checked(docker("push", "--quiet", f"{image}:{tag}"))
    app = make_app(image=image)
    try:
        app.fab_ok("setup")
        app.deploy(images.v1)
        digest = app.history()[0]["digest"]
        app.deploy(images.v2)
        checked(docker("tag", f"{image}:{images.v2}", f"{image}:{images.v1}"))
        checked(docker("push", "--quiet", f"{image}:{images.v1}"))  # the tag names v2's image
        out = app.fab_ok("rollback", f"--tag={images.v1}")
        assert f"pull {digest[:19]} (as recorded)" in out, out
        assert app.version()["version"] == "1"
        assert app.history()[-1]["digest"] == digest
    finally:
        remove_local_images(image)
        delete_from_registry(image.split("/", 1)[1])


# --------------------------------------------------------------------------- 7: projects


def test_apps_whose_directory_names_squeeze_alike_keep_their_own_projects(make_app, images):
    """/srv/ha-b and /srv/ha_b were one compose project: deploying one replaced the other."""
    first, second = make_app(), make_app()
    suffix = first.app_dir.rsplit("-", 1)[1]
    for app, name in ((first, f"/srv/t-ha-b{suffix}"), (second, f"/srv/t-ha_b{suffix}")):
        app.app_dir = app.env["DEPLOY_APP_DIR"] = name
        app.fab_ok("setup")
        app.deploy(images.v1)
    assert first.project != second.project
    first.post_item("only in the first")
    assert first.wait_http("/health") == 200 and second.wait_http("/health") == 200
    assert second.item_names() == []

    # The same project name forced on both: the second is refused, naming both directories.
    forced = {"DEPLOY_PROJECT_NAME": first.project}
    out = failed(second.fab("deploy", f"--tag={images.v2}", env=forced))
    assert f"belongs to {first.app_dir}, not to {second.app_dir}" in out, out
    assert first.item_names() == ["only in the first"]
    assert first.version()["version"] == "1"


# --------------------------------------------------------------------------- setup refusals


def test_setup_refuses_sqlite_on_a_named_volume(app):
    compose = app.repo / "compose.yaml"
    compose.write_text(compose.read_text().replace('"./data:/data"', '"appdata:/data"')
                       + "volumes:\n  appdata:\n")
    out = failed(app.fab("setup"))
    assert "named volume" in out and "appdata" in out
    assert "./data:/data" in out  # the fix


# --------------------------------------------------------------------------- 4: revisions


def test_the_revision_is_read_from_the_database_when_the_migration_prints_nothing(live, images):
    """Alembic's logging silenced: each deploy once recorded the previous release's revision,
    and --downgrade went one revision too far."""
    quiet = {"DEPLOY_MIGRATE_COMMAND": "alembic upgrade head >/dev/null 2>&1"}
    live.post_item("kept")
    out = live.deploy(images.v2, env=quiet)
    assert "Running upgrade" not in out
    assert live.history()[-1]["revision"] == "0002"
    before = live.backups()
    out = live.fab_ok("rollback", f"--tag={images.v1}", "--downgrade", env=quiet)
    assert "downgrading the schema 0002 -> 0001" in out
    assert len(set(live.backups()) - set(before)) == 1  # a backup before the downgrade
    assert live.db_revision() == "0001" and live.item_names() == ["kept"]


# --------------------------------------------------------------------------- 9: health on the VM


def test_the_health_url_is_asked_on_the_vm_not_on_the_laptop(live, images):
    """Something on the laptop answers 200 at health_url; the VM's app is broken there. The
    deploy must switch back. Meaningful once the sandbox VM has its own network:
    while the laptop is the VM, the test says so and skips."""
    with answering_200() as port:
        url = f"http://127.0.0.1:{port}/health"
        seen = live.fab("run", "--cmd", shlex.join(cmd.http_status(url)))  # as the VM sees it
        if "200" in output(seen).split():
            pytest.skip("the sandbox VM shares the laptop's network: nothing to tell apart")
        out = failed(live.fab("deploy", f"--tag={images.v2}",
                              env={**HEALTH_TIMEOUT, "DEPLOY_HEALTH_URL": url}))
        assert f"nothing answered {url} on the VM" in out
        assert f"switched back to {images.v1}" in out


# --------------------------------------------------------------------------- 8: signals, network


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_release_the_lock_like_ctrl_c(live, images, signum):
    proc = background(live, "deploy", f"--tag={images.v2}")
    lock = live.vm(".deploy/lock")
    try:
        wait_for(lock.exists, proc=proc)
        proc.send_signal(signum)
        out = proc.communicate(timeout=180)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, out
    assert "interrupted" in out and "Traceback" not in out, out
    assert not lock.exists(), out
    assert live.wait_http("/health") == 200 and live.version()["version"] == "1"


def test_a_live_deploy_renews_its_lease_and_unlock_refuses_it_without_force(live, images):
    """`fab unlock` during a live deploy once let a second deploy run."""
    # A lease of 6 s renewed every 1.5 s; a migration that waits for the test's go, so that
    # `fab unlock` starts and asks while the deploy runs, even on a loaded machine.
    env = {"DEPLOY_LOCK_LEASE": "6", "DEPLOY_MIGRATE_COMMAND": GATED_MIGRATION}
    proc = background(live, "deploy", f"--tag={images.v2}", env=env)
    lease = live.vm(".deploy/lock/lease")
    try:
        wait_for(lease.exists, proc=proc)
        first = lease.stat().st_mtime
        wait_for(lambda: not lease.exists() or lease.stat().st_mtime > first, 15, proc)
        refused = live.fab("unlock", env=env)
        out = failed(refused)
        assert "held by a deploy that is alive" in out and "--force" in out
        assert f"[pid {proc.pid}, lease renewed" in out
        assert live.vm(".deploy/lock").exists()
        assert proc.poll() is None, "the deploy ended before its migration was let go"
        live.vm(GATE).touch()
        assert proc.wait(timeout=180) == 0, proc.communicate()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert live.version()["version"] == "2"


def test_unlock_clears_a_stale_lease_and_force_clears_a_fresh_one(live):
    lock = live.vm(".deploy/lock")
    lock.mkdir()
    holder = {"holder": "bob@laptop", "host": "laptop", "pid": 4242, "time": "T", "tag": "x",
              "action": "deploy", "lease": 60}
    (lock / "holder.json").write_text(json.dumps(holder) + "\n")
    (lock / "lease").write_text("")
    out = failed(live.fab("unlock"))
    assert "bob@laptop since T deploy of x [pid 4242, lease renewed" in out
    assert "cleared the lock held by bob@laptop" in live.fab_ok("unlock", "--force", "--yes")
    assert not lock.exists()


class FreezingProxy:
    """A TCP forwarder to the sandbox sshd that can stop passing bytes (a network that drops
    every packet) without closing anything."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.05)
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


def test_a_dead_network_fails_within_the_network_timeout_and_reports_the_lock(
        live, images, sandbox, tmp_path):
    host, port = live.env["DEPLOY_HOST"], int(live.env["DEPLOY_PORT"])
    proxy = FreezingProxy((host, port))
    name = host if port == 22 else f"[{host}]:{port}"
    known = tmp_path / "known_hosts"  # the VM's key, for the proxy's address
    known.write_text("".join(
        f"[127.0.0.1]:{proxy.port} {line.split(None, 1)[1]}\n"
        for line in sandbox.known_hosts.read_text().splitlines()
        if line.strip() and name in line.split()[0].split(",")))
    env = {"DEPLOY_HOST": "127.0.0.1", "DEPLOY_PORT": str(proxy.port),
           "DEPLOY_KNOWN_HOSTS": str(known),
           "DEPLOY_NETWORK_TIMEOUT": "6", "DEPLOY_CONNECT_TIMEOUT": "5",
           "DEPLOY_LOCK_LEASE": "3"}
    proc = background(live, "deploy", f"--tag={images.v2}", env=env)
    try:
        # Frozen once the lease has been renewed: the deploy knows it holds the lock (a freeze
        # while it is taken is reported as "may be held"; tests/test_vm_commands.py has it).
        lease = live.vm(".deploy/lock/lease")
        wait_for(lease.exists, proc=proc)
        taken = lease.stat().st_mtime_ns
        wait_for(lambda: lease.exists() and lease.stat().st_mtime_ns != taken, proc=proc)
        proxy.frozen.set()
        started = time.monotonic()
        out = proc.communicate(timeout=120)[0]
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        proxy.close()
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert took < 6 + 5 + 15, f"took {took:.0f}s:\n{out}"
    assert "was lost" in out and "no answer for 6s" in out, out
    assert "the deploy lock on" in out and "still held by this deploy" in out, out
    assert live.version()["version"] == "1"
    time.sleep(3)  # the lease (3 s) runs out: nobody renews it
    assert "cleared the lock" in live.fab_ok("unlock")
