"""`fab promote --from=staging`: deploy to this destination exactly the image another one serves.

No build and no push: the source destination's hosts are asked which release they serve, its
record in their release history (written only once it turned healthy) gives the image's
digest, and each host must serve it healthy right now. This destination then pulls that digest
(`IMAGE@sha256:...`, named TAG on the VM) through the same deploy as `fab deploy`: lock,
checks, pre-deploy hook, backup, migration, health-checked switch, record, post-deploy hook.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from deploy.cli.fabhosts import last_of, release_kind_of
from deploy.cli.fabrelease import deploy_tag
from deploy.core import refs, registry
from deploy.core.destinations import ENV_NAME
from deploy.core.errors import DeployError
from deploy.core.settings import Settings, load_settings
from deploy.release import roles
from deploy.vm.session import session


@dataclasses.dataclass
class Served:
    tag: str
    digest: str
    hosts: list[str]


def source_settings(settings: Settings, source: str) -> Settings:
    """The settings of destination `source`, read as `DEPLOY_DESTINATION=source` would."""
    if not source:
        raise DeployError("promote needs the destination to take the release from",
                          "fab promote --from=staging")
    if source == settings.destination:
        raise DeployError(f"'{source}' is the destination this command deploys to",
                          f"choose the target with {ENV_NAME}=production (or unset it for the "
                          "base settings) and promote --from the other one")
    return load_settings(settings.root, environ={**os.environ, ENV_NAME: source})


def served(settings: Settings) -> Served:
    """What the destination's hosts serve: one tag, healthy on each, recorded with its digest;
    else a refusal saying what a host serves instead. A container still starting is waited
    for, up to health_timeout."""
    where = settings.destination or "the base settings"
    found: list[tuple[str, str, str]] = []
    for _, each, target in roles.targets(settings, None):
        with session(each, target) as vm:
            tag = vm.current_tag()
            record = last_of(vm.history(), tag) if tag else None
            if not tag or not record:
                raise DeployError(f"{where} ({target.host}) has no recorded release to "
                                  "promote; nothing was deployed", "deploy there first")
            digest = record.get("digest", "")
            if vm.current_tag() == tag and vm.health() == "starting":
                # just (re)started: its health check has not run yet, so it earns the wait
                # any deploy gives a new container rather than a refusal
                vm.wait_ready(lambda: vm.health() != "starting", settings.health_timeout)
            problem = "" if vm.is_serving(tag) else f"its container is {vm.health()}"
            problem = problem or vm.runs_pulled_image(tag, digest)
            if problem:
                raise DeployError(
                    f"{where} ({target.host}) does not serve {tag} healthy ({problem}); "
                    "nothing was deployed",
                    f"fix {where} (`fab status` there) and promote once it serves healthy")
            if not digest:
                raise DeployError(f"the release history of {where} ({target.host}) records "
                                  f"no digest for {tag}; nothing was deployed",
                                  f"deploy {tag} there again (it records the digest)")
            found.append((target.host, tag, digest))
    if len({(tag, digest) for _, tag, digest in found}) != 1:
        seen = "; ".join(f"{host}: {tag} ({digest[:19]})" for host, tag, digest in found)
        raise DeployError(f"the hosts of {where} do not serve one release ({seen}); nothing "
                          "was deployed", "finish the deploy there first")
    _, tag, digest = found[0]
    return Served(tag, digest, [host for host, _, _ in found])


def promote(c: Any, settings: Settings, source: str, message: str = "",
            dry_run: bool = False) -> None:
    """Deploy here the digest destination `source` serves healthy (no build, no push)."""
    image = refs.validate_image(settings.require("image"))
    src = source_settings(settings, source)
    if refs.validate_image(src.require("image")) != image:
        raise DeployError(f"{source} runs {src.image}, this destination {image}: a promotion "
                          "moves one image between destinations", "use the same `image` in both")
    release = served(src)
    print(f"[{source}] serves {image}:{release.tag} healthy on {', '.join(release.hosts)} "
          f"({release.digest[:19]})", flush=True)
    now = registry.tag_digest(image, release.tag, settings.registry_user,
                              settings.registry_password)
    if now != release.digest and release_kind_of(c, settings) == "swarm":
        # a stack's nodes pull the tag themselves: it must still name the digest
        raise DeployError(f"{image}:{release.tag} names {now or 'nothing'} in the registry now, "
                          f"not the {release.digest[:19]} that {source} serves; nothing was "
                          "deployed", f"deploy a fresh tag to {source} and promote that")
    note = f"promoted from {source} ({release.digest[:19]})"
    deploy_tag(c, settings, release.tag, message=f"{message} ({note})" if message else note,
               dry_run=dry_run, digest=release.digest, action="promote")
