"""One sequence per action (deploy/release/sequence.py): a one-host deploy, a Swarm manager's
and a roles deploy over two hosts go through the same function, in the same order of phases;
only the switch differs. Dry runs: nothing connects."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from test_vm_commands import dry_vm, settings_for

from deploy.release import roles, sequence
from deploy.vm.phases import Phase, PhaseLine

COMPOSE = 'services:\n  app:\n    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"\n'


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(host, phase or note) as each phase line of every release gets them, and ('sequence',
    ACTION) for each call of the one sequence of ACTION."""
    out: list[tuple[str, str]] = []
    phase, note = PhaseLine.phase, PhaseLine.note
    deploy, rollback, restore = sequence.deploy, sequence.rollback, sequence.restore

    def seen_phase(self: PhaseLine, name: str, **kw: bool
                   ) -> contextlib.AbstractContextManager[Phase]:
        out.append((self.vm.runner.where, name))
        return phase(self, name, **kw)

    def seen_note(self: PhaseLine, text: str) -> None:
        out.append((self.vm.runner.where, text))
        note(self, text)

    def seen_deploy(*args: object, **kw: object) -> sequence.Outcome:
        out.append(("sequence", "deploy"))
        return deploy(*args, **kw)  # type: ignore[arg-type]

    def seen_rollback(*args: object, **kw: object) -> sequence.Outcome:
        out.append(("sequence", "rollback"))
        return rollback(*args, **kw)  # type: ignore[arg-type]

    def seen_restore(*args: object, **kw: object) -> list[str]:
        out.append(("sequence", "restore"))
        return restore(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sequence, "rollback", seen_rollback)
    monkeypatch.setattr(sequence, "restore", seen_restore)
    monkeypatch.setattr(PhaseLine, "phase", seen_phase)
    monkeypatch.setattr(PhaseLine, "note", seen_note)
    monkeypatch.setattr(sequence, "deploy", seen_deploy)
    return out


def steps(seen: list[tuple[str, str]], host: str) -> list[str]:
    return [name for where, name in seen if where == host]


# the order every deploy goes through on the host where the database is
PRIMARY = ["lock", "check", "pull", "backup", "migrate"]
AFTER = ["recorded", "prune"]


def test_one_host_and_two_roles_hosts_deploy_through_the_one_sequence(
        tmp_path: Path, seen: list[tuple[str, str]]) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    with dry_vm(tmp_path) as vm:
        sequence.deploy_host(vm, "v2")
    one = list(seen)
    assert one[0] == ("sequence", "deploy"), one
    assert steps(one, vm.runner.where) == [*PRIMARY, "switch", "healthy", *AFTER], one

    seen.clear()
    (tmp_path / "deploy.toml").write_text('[roles.web]\nhosts = ["web1.invalid", '
                                          '"web2.invalid"]\n')
    roles.deploy(settings_for(tmp_path, batch_limit=1), "v2", dry_run=True)
    assert seen[0] == ("sequence", "deploy") and seen.count(("sequence", "deploy")) == 1, seen
    # the primary's phases are one host's; the other host only checks, pulls, switches
    assert steps(seen, "web1.invalid") == steps(one, vm.runner.where), seen
    assert steps(seen, "web2.invalid") == ["check", "pull", "switch", "healthy", *AFTER], seen
    # lock, every check, every pull, backup + migrate once, each batch, prune: no host pulls
    # before every host is checked, none switches before the migration
    order = [(host, name) for host, name in seen if host != "sequence"]
    assert order == [
        ("web1.invalid", "lock"), ("web1.invalid", "check"), ("web2.invalid", "check"),
        ("web1.invalid", "pull"), ("web2.invalid", "pull"),
        ("web1.invalid", "backup"), ("web1.invalid", "migrate"),
        ("web1.invalid", "switch"), ("web1.invalid", "healthy"), ("web1.invalid", "recorded"),
        ("web2.invalid", "switch"), ("web2.invalid", "healthy"), ("web2.invalid", "recorded"),
        ("web1.invalid", "prune"), ("web2.invalid", "prune")], seen


def test_a_swarm_manager_deploys_through_the_one_sequence_with_its_own_switch(
        tmp_path: Path, seen: list[tuple[str, str]]) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    with dry_vm(tmp_path, target="swarm", stack="shop") as vm:
        sequence.deploy_host(vm, "v2")
    assert seen[0] == ("sequence", "deploy"), seen
    assert steps(seen, vm.runner.where) == [*PRIMARY, "switch the stack", *AFTER], seen


def test_the_pre_deploy_hook_runs_after_every_check_before_any_pull(
        tmp_path: Path, seen: list[tuple[str, str]]) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    (tmp_path / "deploy.toml").write_text('[roles.web]\nhosts = ["web1.invalid", '
                                          '"web2.invalid"]\n')

    def hook(previous: str) -> None:
        seen.append(("hook", previous))

    roles.deploy(settings_for(tmp_path), "v2", dry_run=True, before_change=hook)
    names = [name if host != "hook" else "hook" for host, name in seen if host != "sequence"]
    assert names[:5] == ["lock", "check", "check", "hook", "pull"], seen



def test_one_host_and_two_roles_hosts_roll_back_through_the_one_sequence(
        tmp_path: Path, seen: list[tuple[str, str]]) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    with dry_vm(tmp_path) as vm:
        sequence.rollback_host(vm, "v1", downgrade=True)
    one = list(seen)
    assert one[0] == ("sequence", "rollback"), one
    assert steps(one, vm.runner.where) == ["lock", "check", "pull", "switch", "healthy",
                                           "recorded"], one

    seen.clear()
    (tmp_path / "deploy.toml").write_text('[roles.web]\nhosts = ["web1.invalid", '
                                          '"web2.invalid"]\n')
    roles.rollback(settings_for(tmp_path, batch_limit=1), "v1", dry_run=True)
    assert seen.count(("sequence", "rollback")) == 1, seen
    assert steps(seen, "web1.invalid") == steps(one, vm.runner.where), seen
    order = [(host, name) for host, name in seen if host != "sequence"]
    assert order == [
        ("web1.invalid", "lock"), ("web1.invalid", "check"), ("web2.invalid", "check"),
        ("web1.invalid", "pull"), ("web2.invalid", "pull"),
        ("web1.invalid", "switch"), ("web1.invalid", "healthy"), ("web1.invalid", "recorded"),
        ("web2.invalid", "switch"), ("web2.invalid", "healthy"), ("web2.invalid", "recorded")
    ], seen


def test_one_host_and_two_roles_hosts_restore_through_the_one_sequence(
        tmp_path: Path, seen: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    name = "20300101T000000Z-v1.sqlite3"
    with dry_vm(tmp_path) as vm:
        sequence.restore_host(vm, name)
    one = list(seen)
    assert one[0] == ("sequence", "restore"), one
    phases = ["lock", "check", "stop", "save", "restore", "start", "healthy"]
    assert steps(one, vm.runner.where) == phases, one

    seen.clear()
    capsys.readouterr()
    (tmp_path / "deploy.toml").write_text('[roles.web]\nhosts = ["web1.invalid", '
                                          '"web2.invalid"]\n')
    roles.restore(settings_for(tmp_path), name, dry_run=True)
    assert seen.count(("sequence", "restore")) == 1, seen
    assert steps(seen, "web1.invalid") == phases, seen
    printed = capsys.readouterr().out
    # the other host stops before the primary's, starts after its health check
    stop = printed.index("stopped the app on web2.invalid (web)")
    assert printed.index("[web1.invalid] lock") < stop < printed.index("[web1.invalid] stop\n")
    assert printed.index("web2.invalid (web): started again") > printed.index(" healthy"), printed


def test_a_promotion_over_roles_pulls_exactly_the_digest_on_every_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    (tmp_path / "deploy.toml").write_text('[roles.web]\nhosts = ["web1.invalid", '
                                          '"web2.invalid"]\n')
    digest = "sha256:" + "a" * 64
    roles.deploy(settings_for(tmp_path), "v2", dry_run=True, digest=digest)
    printed = capsys.readouterr().out
    for host in ("web1.invalid", "web2.invalid"):
        assert f"[{host}] $ docker pull --quiet 127.0.0.1:5000/example@{digest}" in printed, \
            printed
