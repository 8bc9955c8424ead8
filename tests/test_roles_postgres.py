"""The Postgres example over roles, as the README lays it out: two web hosts behind their VMs'
Caddy and a worker, one database on the primary host (example-postgres/compose.roles.yaml),
every host reaching it over the network. v1 → v2 with a migration → a v3 that never turns
healthy → rollback → restore, under a probe on each web host: the same rows everywhere, 0
failed requests at the switches, backups pruned. A host that cannot reach the database is
refused before anything switches.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLE_POSTGRES
from test_roles import WORKER_VM, report_lines
from vmkit import App, Probe, Proxy, apply_v2, buildx, checked, docker, make_app_repo, output

from sandbox.ports import free_port

WORKER_COMPOSE = """\
services:
  worker:
    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"
    env_file: .env
    environment:
      DATABASE_URL: "postgresql+psycopg://app:${POSTGRES_PASSWORD}@${DATABASE_HOST}:${DATABASE_PORT}/app"
    command:
      - python
      - -c
      - "import pathlib, time\\nwhile True:\\n pathlib.Path('/tmp/beat').touch()\\n time.sleep(1)"
    healthcheck:
      test:
        - CMD
        - python
        - -c
        - "import os, sys, time; sys.exit(time.time() - os.path.getmtime('/tmp/beat') > 5)"
      interval: 1s
      retries: 3
    restart: unless-stopped
"""
KEEP_BACKUPS = 2
ROWS = ("alpha", "beta", "gamma")


def set_env(repo: Path, **values: str) -> None:
    """Set KEY=VALUE lines in the repo's .env (replacing earlier ones)."""
    path = repo / ".env"
    lines = [line for line in path.read_text().splitlines()
             if line.split("=", 1)[0] not in values]
    path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n")


@pytest.fixture
def pg_roles(pg_images, sandbox, two_vms, tmp_path):
    """The Postgres example with web = vm1 (primary: the database), vm2 and worker = vm5,
    each web host behind its VM's Caddy; one view per host."""
    from conftest import sandbox_up

    sandbox_up(WORKER_VM)
    web1, web2 = two_vms
    worker = sandbox.vm(WORKER_VM)
    repo = make_app_repo(tmp_path / "app", EXAMPLE_POSTGRES)
    app = App.create(repo, pg_images, tmp_path / "xdg-cache", sandbox, vm=web1)
    proxies = [Proxy("caddy:2", web1)]
    proxies.append(dataclasses.replace(proxies[0], machine=web2))
    app.proxy = proxies[0]
    app.env.update({"DEPLOY_PROXY": "true", "DEPLOY_PROXY_HOST": app.host,
                    "DEPLOY_COMPOSE_FILE": "compose.roles.yaml", "DEPLOY_HEALTH_URL": "",
                    "DEPLOY_KEEP_BACKUPS": str(KEEP_BACKUPS), **proxies[0].settings()})
    # the database port on vm1's address: the app's URL names it for every host
    set_env(repo, DATABASE_HOST=web1.address, DATABASE_BIND=web1.address,
            DATABASE_PORT=str(free_port()))
    (repo / "compose.worker.yaml").write_text(WORKER_COMPOSE)
    with (repo / "deploy.toml").open("a") as toml:
        toml.write('\nprimary_role = "web"\nbatch_limit = 1\nbatch_wait = 0\n'
                   f'[roles.web]\nhosts = ["{web1.address}", "{web2.address}"]\n'
                   f'[roles.worker]\nhosts = ["{worker.address}"]\nkind = "worker"\n'
                   'service = "worker"\ncompose_file = "compose.worker.yaml"\n')
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "roles, the database on the primary"], cwd=repo,
                   check=True)
    views = [app, dataclasses.replace(app, machine=web2, tunnel=None, proxy=proxies[1]),
             dataclasses.replace(app, machine=worker, tunnel=None, proxy=None)]
    yield views
    for view in reversed(views):
        view.tear_down()
    for proxy in proxies:
        proxy.tear_down()


def never_healthy(images, root: Path) -> str:
    """v2's code that exits at start: a v3 that never turns healthy."""
    repo = make_app_repo(root / "v3", EXAMPLE_POSTGRES)
    apply_v2(repo, EXAMPLE_POSTGRES)
    dockerfile = repo / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + '\nCMD ["python", "-c", '
                          '"import sys; sys.exit(\'crashing at start\')"]\n')
    tag = f"{images.v2}-crash"
    buildx(images.ref(tag), repo)
    checked(docker("push", "--quiet", images.ref(tag)))
    return tag


def items(view) -> list[str]:
    """The item names one web host serves (through its Caddy)."""
    return sorted(item["name"] for item in view.get_json("/items"))


def test_roles_share_the_primarys_postgres_through_a_release_and_back(pg_roles, pg_images,
                                                                        tmp_path):
    web1, web2, worker = pg_roles
    v1, v2 = pg_images.v1, pg_images.v2
    hosts = [view.machine.address for view in pg_roles]
    v3 = never_healthy(pg_images, tmp_path)

    # The app's URL names a host where no database listens: the second web host's check
    # refuses before anything switches (on the primary the migration would say it).
    set_env(web1.repo, DATABASE_HOST=hosts[1])
    web1.fab_ok("setup")
    refused = web1.fab("deploy", f"--tag={v1}")
    text = output(refused)
    assert refused.returncode == 1, text
    assert f"error: {hosts[1]} (web) cannot reach the database with {v1}: {hosts[1]}:" in text
    assert "nothing was switched" in text and "fix: the app's database URL" in text
    assert not any(view.containers(service=service) for view, service in
                   ((web1, "app"), (web2, "app"), (worker, "worker"))), "nothing started"
    assert not web1.vm(".deploy/lock").exists()

    set_env(web1.repo, DATABASE_HOST=hosts[0])
    setup = web1.fab_ok("setup")
    assert all(f"== {h} (role " in setup for h in hosts)
    out = web1.deploy(v1)
    assert report_lines(out) == {h: f"{v1}  [new]  healthy" for h in hosts}, out
    assert web1.containers(service="db") and not web2.containers(service="db") and \
        not worker.containers(service="db"), "one database, on the primary host"
    for name in ROWS:
        web1.post_item(name)
    assert items(web1) == items(web2) == sorted(ROWS), "both web hosts read one database"

    # v2 migrates once, on the primary; both web hosts switch blue/green, no request lost
    with Probe(web1, rate=20) as probe1, Probe(web2, rate=20) as probe2:
        out = web1.deploy(v2)
    assert report_lines(out) == {h: f"{v2}  [new]  healthy" for h in hosts}, out
    for probe in (probe1, probe2):
        assert not probe.failed, probe.summary()
        assert probe.versions()[-1] == "2", probe.summary()
    assert web1.db_revision() == "0002"
    assert items(web1) == items(web2) == sorted(ROWS)
    # each host's phases on its own line, as on one host; backup and migrate on the primary
    lines = {h: [line for line in out.splitlines() if line.startswith(f"[{h}] ")] for h in hosts}
    for host in hosts:
        assert any("pull" in line for line in lines[host]), f"no phases of {host}:\n{out}"
    assert any("backup" in line and "migrate" in line for line in lines[hosts[0]]), out
    assert not any("migrate" in line for line in lines[hosts[1]] + lines[hosts[2]]), out
    before_v2 = web1.history()[-1]["backup"]
    assert before_v2 in web1.backups()
    assert len(web1.backups()) <= KEEP_BACKUPS, web1.backups()

    # v3 never turns healthy on the first web host: switched back there, nobody else touched
    with Probe(web1, rate=20) as probe1, Probe(web2, rate=20) as probe2:
        failed = web1.fab("deploy", f"--tag={v3}")
    text = output(failed)
    assert failed.returncode == 1, text
    assert f"error: {hosts[0]} (web): {v3} did not turn healthy" in text
    assert report_lines(text) == {h: f"{v2}  [old]  healthy" for h in hosts}, text
    for probe in (probe1, probe2):
        assert not probe.failed, probe.summary()
        assert set(probe.versions()) == {"2"}, probe.summary()

    # rollback to v1 with --downgrade: every host on v1 first (it runs on v2's schema:
    # expand/contract), then the schema back once, on the primary, in the migrate command's
    # environment, after a backup; no request lost
    backups = set(web1.backups())
    with Probe(web1, rate=20) as probe1, Probe(web2, rate=20) as probe2:
        back = web1.fab_ok("rollback", f"--tag={v1}", "--downgrade")
    assert report_lines(back) == {h: f"{v1}  [new]  healthy" for h in hosts}, back
    for probe in (probe1, probe2):
        assert not probe.failed, probe.summary()
        assert probe.versions()[-1] == "1", probe.summary()
    assert "downgrading the schema 0002 -> 0001" in back, back
    assert web1.db_revision() == "0001"
    assert set(web1.backups()) - backups, "a backup before the downgrade"
    assert {(e["tag"], e["action"], e["revision"]) for e in web2.history()[-1:]} == \
        {(v1, "rollback", "0001")}
    assert items(web1) == items(web2) == sorted(ROWS)

    # a row written after the backup taken before v2, then that backup restored on the
    # primary: v1 (the schema it matches) serves it on every host
    web2.post_item("after the backup")
    assert items(web1) == sorted([*ROWS, "after the backup"])
    restored = web1.fab_ok("restore", f"--backup={before_v2}")
    assert f"stopped the app on {hosts[1]} (web), {hosts[2]} (worker)" in restored, restored
    assert f"{hosts[1]} (web): started again, healthy" in restored
    assert web1.db_revision() == "0001"
    for view in (web1, web2):
        assert view.wait_http("/items") == 200
        assert items(view) == sorted(ROWS), "the restored rows, on every host"
        assert view.version()["version"] == "1"
    saved = [n for n in web1.backups() if "pre-restore" in n]
    assert len(saved) == 1 and f"saved as {saved[0]}" in restored, (saved, restored)
