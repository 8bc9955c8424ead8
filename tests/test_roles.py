"""Roles (issue 13 item 1): the settings, the plan (migration host, batches), what a failure
puts back, and `fab deploy`/`fab rollback` over roles as a user runs them (dry runs and bad input
open no connection). The live three-VM tests are at the end of this file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_no_traceback, child_env, output

from deploy.errors import DeployError
from deploy.roles import Role, Slot, host_settings, make_plan, parse_roles, to_switch_back
from deploy.settings import Settings, load_settings

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
    (repo / "fabfile.py").write_text("from deploy.fabtasks import ns  # noqa: F401\n")
    (repo / "compose.yaml").write_text(
        "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n")
    (repo / "deploy.toml").write_text(
        'image = "127.0.0.1:5000/rolesapp"\nuser = "root"\nprimary_role = "web"\n'
        'batch_limit = 1\nhealth_url = "http://127.0.0.1:8000/health"\n'
        '[roles.web]\nhosts = ["10.0.0.1", "10.0.0.2"]\n'
        '[roles.worker]\nhosts = ["10.0.0.3"]\nkind = "worker"\nservice = "worker"\n' + extra)
    return repo


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
