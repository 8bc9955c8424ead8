"""The switch of one host to a release, checked: the one step of a release that differs by
target. `compose` recreates the service, waits for its health (as the VM sees it) and checks
the container runs the pulled image, switching back to the previous release on failure;
`proxy` starts the new container beside the old one behind Caddy (deploy/proxy.py); `swarm`
deploys the stack and waits for Swarm, which rolls a failed task back itself (deploy/swarm.py).
A restore stops the app and starts it again the same way: compose stops and starts its
service; a stack's app service is scaled to 0, then the stack deployed again.
"""

from __future__ import annotations

from deploy.commands import vm as cmd
from deploy.errors import DeployError
from deploy.release.target import switch_kind
from deploy.remote.flows import switch_back
from deploy.remote.phases import Release, optional_phase
from deploy.remote.signals import exit_code, sigint_deferred, signal_name
from deploy.remote.steps import Vm
from deploy.shell import ConnectionLost

PHASE = {"compose": "switch", "proxy": "switch behind the proxy", "swarm": "switch the stack"}


def check_switch(vm: Vm) -> None:
    """What this host's switch needs before anything changes (a stack: a swarm manager;
    behind the proxy: the app's host names, which Caddy routes it by)."""
    kind = switch_kind(vm.settings)
    if kind == "swarm":
        from deploy import swarm

        swarm.require_manager(vm)
    elif kind == "proxy":
        from deploy import proxy

        try:
            proxy.hosts(vm.settings)
        except DeployError as exc:
            raise DeployError(f"{exc.message}; nothing was changed", exc.fix) from None


def pins_digest(vm: Vm) -> bool:
    """Whether the switch runs the image pulled on this host (compose, proxy), so that a
    rollback pulling the recorded digest runs exactly it; a stack's nodes pull the tag from
    the registry themselves."""
    return switch_kind(vm.settings) != "swarm"


def switch_checked(vm: Vm, tag: str, previous: str, release: Release | None = None) -> None:
    """Switch to `tag` the way this host switches; on return `tag` serves, else a DeployError
    says what failed and what serves. The one place a release is switched (`release`, if
    given, gets the switch's phases)."""
    kind = switch_kind(vm.settings)
    if kind == "proxy":
        from deploy import proxy  # built on the remote Vm: imported when it is used

        with optional_phase(release, PHASE[kind], cuts_short=False) as seen:
            return proxy.switch_checked(vm, tag, previous, seen)
    if kind == "swarm":
        from deploy import swarm

        with optional_phase(release, PHASE[kind], cuts_short=False):
            return swarm.stack_switch(vm, tag, previous)
    return compose_switch(vm, tag, previous, release)


def stop_app(vm: Vm) -> None:
    """Stop the app for a restore: its compose service, or a stack's app service scaled to 0
    (waited for until no task of it runs)."""
    if switch_kind(vm.settings) == "swarm":
        from deploy import swarm

        return swarm.scale_to_zero(vm)
    vm.run(cmd.stop(vm.compose(), vm.settings.service), hide=True)


def start_app(vm: Vm, tag: str) -> str:
    """Start the app stopped by stop_app at release `tag` (its release files written):
    compose `up` (its health is checked after, by the caller), or the stack deployed at `tag`
    and waited for as a switch is: '' when it runs, else what Swarm did instead."""
    if switch_kind(vm.settings) == "swarm":
        from deploy import swarm

        return swarm.start_stack(vm, tag)
    vm.run(cmd.up(vm.compose()), hide=True)
    return ""


def health_checked_at_start(vm: Vm) -> bool:
    """Whether start_app waited for the app's health itself (a stack: Swarm's healthcheck)."""
    return switch_kind(vm.settings) == "swarm"


def compose_switch(vm: Vm, tag: str, previous: str, release: Release | None = None) -> None:
    """`compose up` with `tag`, then its health and image; on failure `previous` back."""
    try:
        with optional_phase(release, PHASE["compose"], cuts_short=False):
            vm.switch(tag)
        with optional_phase(release, "healthy", cuts_short=False) as seen:
            problem = vm.wait_healthy(tag) or vm.runs_pulled_image(tag)
            seen.result = "no" if problem else ""
    except (KeyboardInterrupt, DeployError) as exc:
        # Interrupted or cut off mid-switch: put the recorded release back before we leave.
        interrupted = isinstance(exc, KeyboardInterrupt)
        what = signal_name(exc) if isinstance(exc, KeyboardInterrupt) else (
            f"the SSH connection to {exc.where} was lost ({exc.reason})"
            if isinstance(exc, ConnectionLost)
            else exc.message)
        with sigint_deferred():
            back = switch_back(vm, tag, previous, f"switching to {tag} failed: {what}")
        raise DeployError(f"switching to {tag} failed ({what}); {back}",
                          "run the same deploy again",
                          exit_code=exit_code(exc) if interrupted else 1) from None
    if not problem:
        return
    back = switch_back(vm, tag, previous, f"{tag} is not healthy ({problem})")
    url = vm.settings.health_url
    if url and url in problem and url in back.partition(", which is ")[2]:
        # Two releases fail the same URL though their containers run: the URL is wrong.
        raise DeployError(
            f"{tag} did not turn healthy ({problem}); {back}: both releases fail health_url "
            f"{url}, so the setting is what is wrong, not the app",
            f"set health_url (DEPLOY_HEALTH_URL) to a URL the app answers 200 on, as the VM "
            f"sees it (try it: fab run --cmd \"curl -si {url}\"), then deploy {tag} again")
    raise DeployError(
        f"{tag} did not turn healthy ({problem}); {back}",
        "look at `fab logs`, fix the app and deploy a new tag"
        if back.startswith("switched") or not previous
        # The failed tag was not recorded: a bare `fab rollback` would pick the one before.
        else f"`fab rollback --tag={previous}` puts the previous release back",
    )
