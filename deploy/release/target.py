"""Where a release goes and how each host switches: the one place that decides.

A release is one of three kinds. `host`: the settings' hosts (or `-H` hosts), one after another,
each a plan of one slot. `roles`: every role's hosts of deploy.toml (no `-H`) in batches, one
migration where the database is. `swarm`: a stack deployed from a manager. Each host then
switches in one of three ways: `compose` (recreate the service), `proxy` (blue/green behind
Caddy) or `swarm` (`docker stack deploy`).
"""

from __future__ import annotations

from typing import Literal

from deploy.core.errors import DeployError
from deploy.core.settings import SETTINGS_FILE, Settings
from deploy.release.roleplan import configured

Kind = Literal["host", "roles", "swarm"]
Switch = Literal["compose", "proxy", "swarm"]


def release_kind(settings: Settings, use_roles: bool = True) -> Kind:
    """The kind of release for `settings`; `use_roles`: no `-H` names the hosts, so the
    [roles.*] tables of deploy.toml (if any) say where it goes."""
    has_roles = use_roles and configured(settings)
    if settings.target == "swarm":
        if has_roles:  # a stack goes out from one manager; Swarm places its tasks itself
            raise DeployError(f"target = \"swarm\" and [roles.*] tables in {SETTINGS_FILE}: a "
                              "stack is deployed from one manager and Swarm places its tasks, "
                              "so roles do not apply; nothing was changed",
                              "remove the [roles.*] tables, or set target = \"compose\"")
        return "swarm"
    return "roles" if has_roles else "host"


def switch_kind(settings: Settings) -> Switch:
    """How a host with `settings` switches to a release."""
    if settings.target == "swarm":
        return "swarm"
    return "proxy" if settings.proxy else "compose"
