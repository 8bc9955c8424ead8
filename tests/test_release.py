"""One release, whatever it goes out to: the kind of release is decided in one place
(deploy/release/target.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.core.errors import DeployError
from deploy.core.settings import load_settings
from deploy.release import sequence
from deploy.release.target import release_kind, switch_kind

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ROLES = '[roles.web]\nhosts = ["vm1", "vm2"]\n'


def settings_with(tmp_path: Path, toml: str):
    (tmp_path / "deploy.toml").write_text('image = "r/app"\nhost = "vm1"\n' + toml)
    return load_settings(tmp_path, environ={})


def test_the_kind_of_release_follows_the_settings_and_the_h_hosts(tmp_path: Path) -> None:
    assert release_kind(settings_with(tmp_path, "")) == "host"
    roles = settings_with(tmp_path, ROLES)
    assert release_kind(roles) == "roles"
    assert release_kind(roles, use_roles=False) == "host", "-H hosts are hosts, not roles"
    swarm = settings_with(tmp_path, 'target = "swarm"\n')
    assert release_kind(swarm) == "swarm"
    assert [switch_kind(s) for s in (roles, swarm, settings_with(tmp_path, "proxy = true\n"))] \
        == ["compose", "swarm", "proxy"]


def test_roles_with_a_swarm_target_are_refused_saying_why(tmp_path: Path) -> None:
    both = settings_with(tmp_path, 'target = "swarm"\n' + ROLES)
    with pytest.raises(DeployError) as err:
        release_kind(both)
    assert "roles do not apply" in err.value.message and "nothing was changed" in err.value.message
    assert "remove the [roles.*] tables" in err.value.fix
    assert release_kind(both, use_roles=False) == "swarm"


def test_the_target_setting_is_read_in_one_place_only() -> None:
    """Which flow, which switch: deploy/release/target.py decides; no other module reads
    `target` (or asks for roles itself) to pick a flow."""
    readers = {}
    for path in DEPLOY.rglob("*.py"):
        text = path.read_text()
        found = re.findall(r"\b(?:settings|s)\.target\b|\broles\.configured\(", text)
        if found:
            readers[str(path.relative_to(DEPLOY))] = found
    assert readers == {"release/target.py": ["settings.target", "settings.target"]}


# -- every target's deploy: the same phases, only the switch differs (a dry run: commands only)
PHASES = ["lock", "check", "pull", "backup", "migrate", "switch", "recorded", "prune"]
SWITCHES = {"compose": "switch", "proxy": "switch behind the proxy", "swarm": "switch the stack"}


def phases(text: str, host: str = "") -> list[str]:
    """The phase names of a release's line(s) (on `host`, if given), in order, each once (a
    phase's name starts the line part and comes again with its result after a command in
    between)."""
    names: list[str] = []
    for line in text.splitlines():
        where, _, rest = line.partition("] ")
        if not where.startswith("[") or rest.startswith("$ "):  # a command, not a phase
            continue
        if host and where != f"[{host}":
            continue
        for part in rest.split(" · "):
            name = part.split(" ", 1)[0]
            if name in PHASES and (not names or names[-1] != name):
                names.append(name)
    return names


def dry_run_deploy(tmp_path: Path, toml: str, host: str = "vm.invalid",
                   task: tuple[str, ...] = ("deploy", "--tag=v2")) -> str:
    import subprocess
    import sys

    from conftest import child_env, output

    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "fabfile.py").write_text("from deploy.cli.fabtasks import ns  # noqa: F401\n")
    (repo / "compose.yaml").write_text(
        "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n")
    (repo / "deploy.toml").write_text(f'image = "127.0.0.1:5000/shop"\nhost = "{host}"\n'
                                      'user = "root"\n' + toml)
    proc = subprocess.run([sys.executable, "-m", "fabric", *task, "--dry-run"],
                          cwd=repo, env=child_env(), capture_output=True, text=True, timeout=60)
    text = output(proc)
    assert proc.returncode == 0, text
    return text


TARGETS = [
    ("compose", ""),
    ("proxy", "proxy = true\nproxy_host = \"shop.example\"\n"),
    ("swarm", 'target = "swarm"\nstack = "shop"\n'),
]
ROLES_TOML = ('primary_role = "web"\nbatch_limit = 1\n[roles.web]\nhosts = ["web1.invalid", '
              '"web2.invalid"]\n[roles.worker]\nhosts = ["job1.invalid"]\nkind = "worker"\n')


@pytest.mark.parametrize("switch, toml", TARGETS)
def test_every_target_deploys_through_the_same_phases_only_the_switch_differs(
        tmp_path: Path, switch: str, toml: str) -> None:
    text = dry_run_deploy(tmp_path, toml)
    assert phases(text) == PHASES, text
    assert f"· {SWITCHES[switch]}" in text or f"] {SWITCHES[switch]}" in text, text
    others = [name for kind, name in SWITCHES.items() if kind != switch and name != "switch"]
    assert not any(name in text for name in others), text


def test_roles_deploy_through_the_same_phases_backup_and_migrate_once(tmp_path: Path) -> None:
    """The primary host (where the database is) goes through every phase; the others through
    the same ones but the lock (one, there) and the backup and migration (once, there)."""
    text = dry_run_deploy(tmp_path, ROLES_TOML, host="")
    assert phases(text, "web1.invalid") == PHASES, text
    others = [p for p in PHASES if p not in ("lock", "backup", "migrate")]
    assert phases(text, "web2.invalid") == phases(text, "job1.invalid") == others, text
    assert text.count("alembic upgrade head") == 1, text


@pytest.mark.parametrize("switch, toml", [*TARGETS, ("roles", ROLES_TOML)])
def test_every_target_rolls_back_through_the_same_checked_phases(
        tmp_path: Path, switch: str, toml: str) -> None:
    """A rollback: the lock, the checks of a deploy, the pull, the switch, the record; on
    every host of the plan."""
    hosts = ["web1.invalid", "web2.invalid", "job1.invalid"] if switch == "roles" else [
        "vm.invalid"]
    text = dry_run_deploy(tmp_path, toml, host="" if switch == "roles" else hosts[0],
                          task=("rollback", "--tag=v1"))
    steps = ["check", "pull", "switch", "recorded"]
    assert phases(text, hosts[0]) == ["lock", *steps], text
    assert all(phases(text, host) == steps for host in hosts[1:]), text
    checked = {line.split("] ", 1)[0] for line in text.splitlines() if " project-dirs " in line}
    assert checked == {f"[{host}" for host in hosts}, "each host's compose project checked"


@pytest.mark.parametrize("flow", ["deploy", "rollback", "restore"])
def test_the_proxy_without_a_host_name_is_refused_before_anything_changes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flow: str) -> None:
    """proxy = true and no proxy_host: refused in the check phase, before a pull, a backup,
    a migration or a stop (it used to come at the switch, after them). A dry run: the
    commands that would run on the VM are the runner's history."""
    from test_vm_commands import dry_vm, ran


    (tmp_path / "compose.yaml").write_text(
        'services:\n  app:\n    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"\n'
        '    ports: ["8000:8000"]\n')
    with dry_vm(tmp_path, proxy=True) as vm, pytest.raises(DeployError) as err:
        if flow == "deploy":
            sequence.deploy_host(vm, "v2")
        elif flow == "rollback":
            sequence.rollback_host(vm, "v1", known_in_registry=lambda tag: True)
        else:
            sequence.restore_host(vm, "20260101T000000Z-v1.dump")
    assert str(err.value).startswith("setting 'proxy_host' is not set (proxy = true needs the "
                                     "app's host name); nothing was changed"), err.value
    assert "fix: add `proxy_host = \"app.example.com\"` to deploy.toml" in str(err.value)
    for changes in ("docker pull", "backup-", "alembic", "up -d", " stop ", "restore-"):
        assert not ran(vm.runner.history, changes), (changes, vm.runner.history)
    assert "check" in capsys.readouterr().out, "refused in the check phase"


def test_a_stack_restore_scales_the_app_to_0_and_deploys_the_stack_again(tmp_path: Path) -> None:
    """target = "swarm": a restore stops the app service (scaled to 0) before the data step
    and deploys the stack after it; no compose stop or `up` of the app (it would start it
    beside the stack). A dry run: the commands as they would run on the manager."""
    from test_vm_commands import dry_vm, index_of, ran

    with dry_vm(tmp_path, target="swarm", stack="shop", database="postgres") as vm:
        sequence.restore_host(vm, "20260101T000000Z-v1.dump")
    history = vm.runner.history
    order = [index_of(history, step) for step in (
        "docker service scale --detach shop_app=0", "restore-postgres",
        "docker stack deploy --with-registry-auth --prune --compose-file - shop")]
    assert order == sorted(order), history
    assert not ran(history, " stop app") and not ran(history, "up -d --remove-orphans"), history
