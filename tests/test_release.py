"""One release, whatever it goes out to: the kind of release is decided in one place
(deploy/release/target.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.errors import DeployError
from deploy.release.target import release_kind, switch_kind
from deploy.settings import load_settings

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
