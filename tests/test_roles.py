"""Roles: the settings, the plan (migration host, batches), what a failure
puts back, and `fab deploy`/`fab rollback` over roles as a user runs them (dry runs and bad input
open no connection). The live three-VM tests are at the end of this file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_no_traceback, child_env, output

from deploy.core.errors import DeployError
from deploy.core.settings import Settings, load_settings
from deploy.release.roles import Role, Slot, host_settings, make_plan, parse_roles, to_switch_back

ROLES = {
    "web": {"hosts": ["vm1", "vm2"], "kind": "web"},
    "worker": {"hosts": ["vm3"], "kind": "worker", "service": "worker",
               "compose_file": "compose.worker.yaml"},
}


def roles(raw=None) -> list[Role]:
    return parse_roles(ROLES if raw is None else raw)


# -- the settings ------------------------------------------------------------------------
def test_roles_parse_with_defaults() -> None:
    web, worker = roles()
    assert web == Role("web", ("vm1", "vm2"), "web", "", "", "")
    assert worker.kind == "worker" and worker.service == "worker"
    assert parse_roles(None) == []


@pytest.mark.parametrize(("raw", "message"), [
    ({"web": {"hosts": []}}, "[roles.web] in deploy.toml needs hosts"),
    ({"web": {"hosts": "vm1"}}, "needs hosts"),
    ({"web": {"hosts": ["vm1"], "kind": "cron"}}, "kind in [roles.web]"),
    ({"web": {"hosts": ["vm1"], "limit": 2}}, "unknown key 'limit' in [roles.web]"),
    ({"web": {"hosts": ["vm1"]}, "job": {"hosts": ["vm1"]}}, "host vm1 is in roles web and job"),
    ({"web": "vm1"}, "[roles.web] in deploy.toml must be a table"),
    ({"web": {"hosts": ["vm1"], "service": 3}},
     "service in [roles.web] in deploy.toml must be a string"),
])
def test_bad_roles_are_refused_naming_the_key(raw, message) -> None:
    with pytest.raises(DeployError) as caught:
        parse_roles(raw)
    assert message in caught.value.message
    assert caught.value.fix


def test_a_worker_host_has_no_http_health_check_and_its_own_service() -> None:
    base = Settings(root=Path("/x"), health_url="http://127.0.0.1:8000/health", service="app")
    web, worker = roles()
    assert host_settings(base, web, "vm2").health_url == base.health_url
    on_worker = host_settings(base, worker, "vm3")
    assert (on_worker.host, on_worker.health_url, on_worker.service, on_worker.compose_file) == \
        ("vm3", "", "worker", "compose.worker.yaml")


def test_settings_read_the_role_keys_and_skip_the_roles_tables(tmp_path: Path) -> None:
    (tmp_path / "deploy.toml").write_text(
        'image = "r/app"\nprimary_role = "web"\nbatch_limit = 1\nbatch_wait = 2.5\n'
        'rollback_all_on_failure = true\ntarget = "compose"\n'
        '[roles.web]\nhosts = ["vm1"]\n')
    s = load_settings(tmp_path, environ={})
    assert (s.primary_role, s.batch_limit, s.batch_wait, s.rollback_all_on_failure) == \
        ("web", 1, 2.5, True)
    (tmp_path / "deploy.toml").write_text('target = "k8s"\n')
    with pytest.raises(DeployError, match="target"):
        load_settings(tmp_path, environ={})


# -- the plan ------------------------------------------------------------------------------
def test_primary_role_first_then_the_others_in_batches_that_never_mix_roles() -> None:
    three = roles({"worker": {"hosts": ["w1"]}, "web": {"hosts": ["a", "b", "c"]}})
    plan = make_plan(three, "web", limit=2)
    assert plan.primary == Slot("web", "a")
    assert plan.batches == ((Slot("web", "a"), Slot("web", "b")), (Slot("web", "c"),),
                            (Slot("worker", "w1"),))
    # limit 0: each role's hosts at once; no primary_role: the first role written
    plan = make_plan(three, "", limit=0)
    assert plan.primary == Slot("worker", "w1")
    assert [len(b) for b in plan.batches] == [1, 3]


def test_an_unknown_primary_role_or_a_negative_limit_is_refused() -> None:
    with pytest.raises(DeployError, match="primary_role 'db' is not one of the roles"):
        make_plan(roles(), "db")
    with pytest.raises(DeployError, match="batch_limit"):
        make_plan(roles(), "web", limit=-1)


def test_a_failing_batch_puts_back_its_own_hosts_only_unless_rollback_all() -> None:
    plan = make_plan(roles({"web": {"hosts": ["a", "b", "c", "d"]}}), "web", limit=2)
    a, b, c, _ = plan.slots
    # a and b switched in batch 0; c switched in batch 1, then d failed
    assert to_switch_back(plan, 1, [a, b, c], rollback_all=False) == [c]
    assert to_switch_back(plan, 1, [a, b, c], rollback_all=True) == [c, b, a]
    # the first host of a batch failed: nothing of that batch to put back
    assert to_switch_back(plan, 1, [a, b], rollback_all=False) == []


# -- as a user runs it (no VM needed) --------------------------------------------------------
def fab(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fabric", *args], cwd=repo, env=child_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def roles_repo(tmp_path: Path, extra: str = "") -> Path:
    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "fabfile.py").write_text("from deploy.cli.fabtasks import ns  # noqa: F401\n")
    (repo / "compose.yaml").write_text(
        "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n")
    (repo / "deploy.toml").write_text(
        'image = "127.0.0.1:5000/rolesapp"\nuser = "root"\nprimary_role = "web"\n'
        'batch_limit = 1\nhealth_url = "http://127.0.0.1:8000/health"\n'
        '[roles.web]\nhosts = ["10.0.0.1", "10.0.0.2"]\n'
        '[roles.worker]\nhosts = ["10.0.0.3"]\nkind = "worker"\nservice = "worker"\n' + extra)
    return repo


@pytest.mark.slow
def test_dry_run_pulls_everywhere_migrates_once_then_switches_host_by_host(tmp_path) -> None:
    proc = fab(roles_repo(tmp_path), "deploy", "--tag=v2", "--dry-run")
    text = output(proc)
    assert proc.returncode == 0, text
    lines = text.splitlines()
    pulls = [i for i, line in enumerate(lines) if "docker pull" in line and "rolesapp:v2" in line]
    migrations = [i for i, line in enumerate(lines) if "alembic upgrade head" in line]
    batches = [line for line in lines if "] batch " in line]
    assert len(pulls) == 3 and len(migrations) == 1, text
    assert max(pulls) < migrations[0], "every host pulls before the migration"
    assert [b.split("batch ", 1)[1] for b in batches] == [
        "1/3: 10.0.0.1 (web)", "2/3: 10.0.0.2 (web)", "3/3: 10.0.0.3 (worker)"], text
    ups = [i for i, line in enumerate(lines) if " up -d" in line]
    assert len(ups) == 3 and ups[0] > migrations[0], "no host switches before the migration"


def test_bad_roles_in_deploy_toml_stop_fab_with_error_and_fix(tmp_path) -> None:
    repo = roles_repo(tmp_path, '[roles.job]\nhosts = ["10.0.0.1"]\n')
    proc = fab(repo, "deploy", "--tag=v2", "--dry-run")
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert output(proc).splitlines()[:2] == [
        "error: host 10.0.0.1 is in roles web and job",
        "  fix: give a host one role (its compose file can run several services)"]


# -- live: three sandbox VMs ---------------------------------------------------------------
WORKER_VM = 5  # web on the shared vm1 and vm2 (own app_dir and port), the worker on vm5

WORKER_COMPOSE = """\
services:
  worker:
    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"
    env_file: app.env
    environment:
      DATABASE_URL: "sqlite:////data/app.db"
    volumes: ["./data:/data"]
    command:
      - python
      - -c
      - "import pathlib, time\\nwhile True:\\n pathlib.Path('/tmp/beat').touch()\\n time.sleep(1)"
    healthcheck:  # a heartbeat file, not HTTP
      test:
        - CMD
        - python
        - -c
        - "import os, sys, time; sys.exit(time.time() - os.path.getmtime('/tmp/beat') > 5)"
      interval: 1s
      retries: 3
    restart: unless-stopped
"""


@pytest.fixture
def three_vms(sandbox, two_vms):
    from conftest import sandbox_up

    sandbox_up(WORKER_VM)
    return (*two_vms, sandbox.vm(WORKER_VM))


@pytest.fixture
def roles_app(make_app, three_vms):
    """One app repo with web = vm1, vm2 (each behind its VM's Caddy) and worker = vm5
    (batches of one), and a view of its app directory on each VM (the same path, a separate
    machine)."""
    import dataclasses

    from vmkit import Proxy

    web1, web2, worker = three_vms
    proxies = [Proxy("caddy:2", web1)]
    proxies.append(dataclasses.replace(proxies[0], machine=web2))  # same settings, its own VM
    app = make_app(vm=web1).use_proxy(proxies[0])
    (app.repo / "compose.worker.yaml").write_text(WORKER_COMPOSE)
    with (app.repo / "deploy.toml").open("a") as toml:
        toml.write(
            '\nprimary_role = "web"\nbatch_limit = 1\n'
            f'[roles.web]\nhosts = ["{web1.address}", "{web2.address}"]\n'
            f'[roles.worker]\nhosts = ["{worker.address}"]\nkind = "worker"\n'
            'service = "worker"\ncompose_file = "compose.worker.yaml"\n')
    subprocess.run(["git", "add", "-A"], cwd=app.repo, check=True)
    subprocess.run(["git", "commit", "-qm", "roles"], cwd=app.repo, check=True)
    views = [app, dataclasses.replace(app, machine=web2, tunnel=None, proxy=proxies[1]),
             dataclasses.replace(app, machine=worker, tunnel=None, proxy=None)]
    yield views
    for view in views:  # (make_app tears down views[0] again: too late for its Caddy's network)
        view.tear_down()
    for proxy in proxies:
        proxy.tear_down()


def served(view, service: str = "app") -> str:
    """The tag the VM's container of `service` runs, as the VM's engine says (once the old
    one a switch stops in the background is gone)."""
    view.wait_retired()
    ids = view.vm_docker("ps", "-q", "--filter", f"label=com.docker.compose.project="
                         f"{view.project}", "--filter",
                         f"label=com.docker.compose.service={service}").stdout.split()
    assert len(ids) == 1, ids
    image = view.vm_docker("inspect", "--format", "{{.Config.Image}}", ids[0]).stdout.strip()
    return image.rsplit(":", 1)[-1]


def report_lines(text: str) -> dict[str, str]:
    """HOST -> 'TAG  [new|old]  HEALTH' from the deploy's per-host report."""
    out = {}
    for line in text.splitlines():
        if " serves " in line:
            where, rest = line.split("] ", 1)[1].strip().split(" serves ", 1)
            out[where.split()[0]] = rest.strip()
    return out


def test_roles_over_three_vms_one_migration_batches_failure_report_and_rollback(
        roles_app, images) -> None:
    web1, web2, worker = roles_app
    v1, v2 = images.v1, images.v2
    hosts = [v.machine.address for v in roles_app]

    setup = web1.fab_ok("setup")
    assert all(f"== {h} (role " in setup for h in hosts)
    assert worker.vm("compose.worker.yaml").is_file() and not web1.vm("compose.worker.yaml") \
        .exists(), "each role's host gets its role's compose file"

    out = web1.fab_ok("deploy", f"--tag={v1}")
    assert report_lines(out) == {h: f"{v1}  [new]  healthy" for h in hosts}, out
    assert [served(web1), served(web2), served(worker, "worker")] == [v1, v1, v1]
    assert [web1.version()["version"], web2.version()["version"]] == ["1", "1"]

    # A failure injected on the second web host only, and only for v2: its healthcheck fails
    # when compose starts v2 there.
    compose = web2.vm("compose.proxy.yaml")
    lines = compose.read_text().splitlines()
    check = "python -I -S healthcheck.py http://127.0.0.1:8000/health"
    lines = [f'      test: ["CMD-SHELL", "test ${{DEPLOY_TAG}} != {v2} && {check}"]'
             if line.strip().startswith("test: [") else line for line in lines]
    # Docker says unhealthy after 20 failed checks a second apart (not 15 two seconds apart):
    # each of the failing deploys below waits that long, and a v1 starting there still has
    # over 20 s to answer
    swaps = {"interval: 2s": "interval: 1s", "retries: 15": "retries: 20"}
    lines = [line.replace(line.strip(), swaps.get(line.strip(), line.strip()))
             for line in lines]
    assert any(f"!= {v2}" in line for line in lines)
    assert sum(line.strip() in swaps.values() for line in lines) == 2, lines
    compose.write_text("\n".join(lines) + "\n")
    failed = web1.fab("deploy", f"--tag={v2}", env={"DEPLOY_VERBOSE": "1"})  # commands shown
    text = output(failed)
    assert failed.returncode == 1, text
    assert_no_traceback(failed)
    assert text.count("alembic upgrade head") == 1, "one migration run, on the primary host"
    assert [line.split("] ", 1)[1] for line in text.splitlines() if "] batch " in line] == [
        f"batch 1/3: {hosts[0]} (web)", f"batch 2/3: {hosts[1]} (web)"], \
        "the failing batch stops the deploy: the worker's batch never starts"
    report = report_lines(text)
    assert report == {hosts[0]: f"{v2}  [new]  healthy", hosts[1]: f"{v1}  [old]  healthy",
                      hosts[2]: f"{v1}  [old]  healthy"}, text
    # the report matches what each VM serves and records
    assert [served(web1), served(web2), served(worker, "worker")] == [v2, v1, v1]
    assert [web1.version()["version"], web2.version()["version"]] == ["2", "1"], \
        "each web VM's Caddy serves what the report says"
    assert [v.release_env()["DEPLOY_TAG"] for v in roles_app] == [v2, v1, v1]
    assert f"error: {hosts[1]} (web): {v2} did not turn healthy" in text
    assert f"hosts serving {v2}: {hosts[0]} (web)" in text
    # Migrated once, on the primary role's first host. (Roles share one database in real life;
    # here each VM has its own SQLite file, so the other hosts' files show no migration ran.)
    assert web1.db_revision() == "0002"
    recorded = web1.history()[-1]  # the primary's record names its backup, as one host's does
    assert (recorded["tag"], recorded["migrated"]) == (v2, True)
    assert recorded["backup"] in web1.backups(), (recorded, web1.backups())
    for view in (web2, worker):
        assert not view.vm("data/app.db").exists() or not view.db(
            "SELECT name FROM sqlite_master WHERE name = 'alembic_version'")
    assert not web1.vm(".deploy/lock").exists(), "the one lock, on the primary host, released"
    assert not web2.vm(".deploy/lock").exists()

    # The same deploy again (the failure still there): the host already on v2 is left alone,
    # with no second backup, record or migration; the others are tried again.
    kept_history, kept_backups = web1.history(), web1.backups()
    rerun = web1.fab("deploy", f"--tag={v2}", env={"DEPLOY_VERBOSE": "1"})
    text = output(rerun)
    assert rerun.returncode == 1, text
    assert f"serves {v2} healthy already: left alone" in text, text
    assert "alembic upgrade head" not in text and "backup-sqlite" not in text, text
    assert (web1.history(), web1.backups()) == (kept_history, kept_backups)
    assert [line.split("] ", 1)[1] for line in text.splitlines() if "] batch " in line] == [
        f"batch 2/3: {hosts[1]} (web)"], text
    assert f"hosts serving {v2}: {hosts[0]} (web)" in text, text
    assert [served(web1), served(web2), served(worker, "worker")] == [v2, v1, v1]

    status = web1.fab_ok("status")
    assert [line for line in status.splitlines() if line.startswith("== ")] == [
        f"== {hosts[0]} (role web)", f"== {hosts[1]} (role web)", f"== {hosts[2]} (role worker)"]
    assert status.count("release:   ") == 3

    back = web1.fab_ok("rollback", f"--tag={v1}")
    assert report_lines(back) == {h: f"{v1}  [new]  healthy" for h in hosts}, back
    assert [served(web1), served(web2), served(worker, "worker")] == [v1, v1, v1]
    assert [web1.version()["version"], web2.version()["version"]] == ["1", "1"]
    assert web1.history()[-1]["action"] == "rollback"
    releases = web1.fab_ok("releases")
    assert releases.count("== ") == 3 and "* " in releases

    # rollback_all_on_failure: the failing batch sends the earlier batches back too
    again = web1.fab("deploy", f"--tag={v2}", env={"DEPLOY_ROLLBACK_ALL_ON_FAILURE": "true"})
    text = output(again)
    assert again.returncode == 1, text
    assert f"switching {hosts[0]} back to {v1}" in text
    assert report_lines(text) == {h: f"{v1}  [old]  healthy" for h in hosts}, text
    assert [served(web1), served(web2), served(worker, "worker")] == [v1, v1, v1]
    assert [web1.version()["version"], web2.version()["version"]] == ["1", "1"]
    assert [(e["tag"], e["action"]) for e in web1.history()[-2:]] == [
        (v2, "deploy"), (v1, "rollback")], "vm1's history says it went to v2 and back"

    # A restore runs where the database is (the primary host), the other hosts' apps stopped
    # meanwhile and health-checked after; a name the primary host lacks changes nothing.
    missing = web1.fab("restore", "--backup=20200101T000000Z-nope.sqlite3")
    assert missing.returncode == 1 and "there is no backup" in output(missing)
    assert [served(web2), served(worker, "worker")] == [v1, v1]
    backup = [n for n in web1.backups() if n.endswith(".sqlite3")][-1]
    restored = web1.fab_ok("restore", f"--backup={backup}")
    assert f"stopped the app on {hosts[1]} (web), {hosts[2]} (worker)" in restored, restored
    assert f"restored {backup}" in restored
    assert f"{hosts[1]} (web): started again, healthy" in restored
    assert f"{hosts[2]} (worker): started again, healthy" in restored
    records = [e for e in web1.history() if e.get("kind") == "restore"]
    assert [r["backup"] for r in records] == [backup] and records[0]["healthy"] is True
    assert not any(e.get("kind") == "restore" for v in (web2, worker)
                   for e in v.history()), "restored once, on the primary host"
    assert [served(web1), served(web2), served(worker, "worker")] == [v1, v1, v1]
    assert [web1.version()["version"], web2.version()["version"]] == ["1", "1"]


@pytest.mark.slow
def test_inv_deploy_dry_run_locks_the_primary_host_once_and_migrates_once(
        example_repo, inv) -> None:
    from conftest import commit_all

    with (example_repo / "deploy.toml").open("a") as toml:
        toml.write('\nprimary_role = "web"\nbatch_limit = 1\n[roles.web]\nhosts = '
                   '["10.0.0.1", "10.0.0.2"]\n[roles.worker]\nhosts = ["10.0.0.3"]\n'
                   'kind = "worker"\n')
    commit_all(example_repo, "roles")
    proc = inv(example_repo, "deploy", "--dry-run", "--skip-tests")
    text = output(proc)
    assert proc.returncode == 0, text
    locks = [line for line in text.splitlines() if " lock-acquire " in line]
    assert len(locks) == 1 and locks[0].startswith("[10.0.0.1]"), text
    assert text.count("alembic upgrade head") == 1
    assert [line.split("] ", 1)[1] for line in text.splitlines() if "] batch " in line] == [
        "batch 1/3: 10.0.0.1 (web)", "batch 2/3: 10.0.0.2 (web)", "batch 3/3: 10.0.0.3 (worker)"]
