"""The switch of kind `compose`: the app's service recreated in place (`compose up` with the
new tag), then its health (as the VM sees it) and its image checked; on failure the previous
release is put back the same way. Requests fail for the seconds the container restarts: the
proxy's blue/green switch (bluegreen.py) is the one without that gap."""

from __future__ import annotations

import re
import time

from deploy.core.errors import DeployError
from deploy.vm.phases import PhaseLine, optional_phase
from deploy.vm.shell import ConnectionLost
from deploy.vm.signals import exit_code, sigint_deferred, signal_name
from deploy.vm.steps import Vm

PHASE = "switch"  # the phase it is timed as
SWITCH_BACK_TRIES = 3
SWITCH_BACK_PAUSE = 5.0  # seconds between tries


def switch_back(vm: Vm, tag: str, previous: str, why: str) -> str:
    """Put `previous` back after `tag` failed; a sentence saying how that went."""
    if not (vm.settings.rollback_on_failure and previous and previous != tag):
        return "no switch back (" + ("rollback_on_failure is off" if previous
                                      else "no previous release recorded") + ")"
    vm.runner.say(f"{why}; switching back to {previous}")
    for attempt in range(SWITCH_BACK_TRIES):
        try:
            vm.switch(previous)
            break
        except DeployError as exc:
            # A `compose up` cut off with our connection may still run on the VM: its
            # containers' names collide with ours until it ends, so try again after it.
            if attempt + 1 == SWITCH_BACK_TRIES or isinstance(exc, ConnectionLost):
                return f"switching back to {previous} failed too: {exc.message}"
            time.sleep(SWITCH_BACK_PAUSE)
    again = vm.wait_healthy(previous)
    return f"switched back to {previous}" + (f", which is {again} too" if again else "")


def switch_checked(vm: Vm, tag: str, previous: str, release: PhaseLine | None = None) -> None:
    """`compose up` with `tag`, then its health and image; on failure `previous` back."""
    try:
        with optional_phase(release, PHASE, cuts_short=False):
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
    answered = re.search(r" answered (\d{3}) on the VM", problem)
    if url and url in problem and url in back.partition(", which is ")[2] \
            and not (answered and answered.group(1).startswith("5")):
        # Two releases fail the same URL though their containers run: the URL is wrong
        # (unless the app answers 5xx there: its own verdict, on what both may share).
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
