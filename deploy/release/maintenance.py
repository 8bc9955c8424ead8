"""Maintenance mode behind the proxy: Caddy answers the app's host names with a 503 page and a
`Retry-After` header instead of passing requests to the app.

`fab maintenance on|off` turns it on and off by hand. `fab restore` turns it on for its window
(the app stopped while its database is replaced; with roles, behind every other host's proxy
too) and off at its end, whatever the end (an error, Ctrl-C, SIGTERM, SIGHUP, a health check
that fails), unless it was on before: then it stays on. (`fab rollback --downgrade` needs none:
the older release serves first, on both schemas.)
The switch is a file on the VM that Caddy looks for at each request (see
deploy/commands/proxy.py): no config load, so no request is dropped by turning it on or off.
Without the proxy there is nothing in front of the app to answer: `fab maintenance` refuses,
and restore and rollback behave as they always did.
"""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import Iterator

from deploy.commands import proxy as pcmd
from deploy.core.errors import DeployError
from deploy.core.settings import SETTINGS_FILE, Settings
from deploy.core.stamp import stamp
from deploy.release import bluegreen
from deploy.vm.signals import sigint_deferred
from deploy.vm.steps import Vm
from deploy.vm.vm import describe_maintenance

DEFAULT_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Down for maintenance</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;
color:#222}}h1{{font-size:1.6rem}}</style>
</head>
<body>
<h1>Down for maintenance</h1>
<p>{site} is being updated and will be back in a moment. Please try again shortly.</p>
</body>
</html>
"""


def require_proxy(settings: Settings) -> None:
    if not settings.proxy:
        raise DeployError(
            "maintenance mode needs the proxy (proxy = true): without it nothing stands in "
            "front of the app to answer for it; nothing was changed",
            "turn the proxy on (`proxy = true`, `proxy_host`, then `fab setup`), see the "
            "README's \"Zero-downtime releases behind Caddy\"")


def page(settings: Settings) -> str:
    """The page to serve: `maintenance_page` of the app repo, else the toolkit's own (naming
    the app's first host). Checked before anything changes on a VM."""
    if not settings.maintenance_page:
        site = (settings.proxy_host.split(",")[0].strip() or "This site")
        return DEFAULT_PAGE.format(site=html.escape(site))
    path = settings.path(settings.maintenance_page)
    fix = (f"point maintenance_page in {SETTINGS_FILE} at an HTML file of the app repo "
           f"(under {pcmd.PAGE_LIMIT // 1024} KiB), or remove it for the toolkit's own page")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeployError(f"cannot read maintenance_page {path}: "
                          f"{exc.strerror or exc}", fix) from None
    if len(data) > pcmd.PAGE_LIMIT:
        raise DeployError(f"maintenance_page {path} is {len(data)} bytes, more than the "
                          f"{pcmd.PAGE_LIMIT} the proxy serves", fix)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeployError(f"maintenance_page {path} is not UTF-8 text", fix) from None
    if "\x00" in text or not text.strip():
        raise DeployError(f"maintenance_page {path} is empty or not text", fix)
    return text


def turn_on(vm: Vm, reason: str, text: str) -> None:
    """Serve `text` as the 503 page for the app's hosts. The app's route is made current
    first (a config load only if it lacks the maintenance branch, e.g. a route of an older
    toolkit); Caddy needs to run."""
    s = vm.settings
    bluegreen.ensure_running(vm)
    bluegreen.ensure_route(vm)
    info = json.dumps({**stamp(), "reason": reason}, sort_keys=True)
    vm.run(pcmd.maintenance_on(s.proxy_dir, vm.project, s.maintenance_retry_after, info),
           stdin=text, cwd="", hide=True, what="turning maintenance mode on failed",
           fix="see the error above; `fab proxy status` shows the proxy")


def turn_off(vm: Vm) -> None:
    vm.run(pcmd.maintenance_off(vm.settings.proxy_dir, vm.project), cwd="", hide=True,
           what="turning maintenance mode off failed",
           fix="see the error above; `fab maintenance off` tries again")


def status_line(vm: Vm) -> str:
    """`maintenance: …` for `fab status`."""
    info = vm.maintenance_state()
    if info is None:
        return "maintenance: off"
    hosts = ", ".join(bluegreen.hosts(vm.settings))
    return (f"maintenance: ON {describe_maintenance(info)}: {hosts} answer "
            f"503 (Retry-After {vm.settings.maintenance_retry_after}s); `fab maintenance off` "
            "ends it")


@contextlib.contextmanager
def window(vm: Vm, reason: str, note: bool = True) -> Iterator[None]:
    """Maintenance mode for the block, with the proxy (without it: nothing happens). Off at
    the end however the block ends (Ctrl-C, SIGTERM and SIGHUP wait for it), unless it was
    on before. A proxy that cannot turn it on is a warning, not a reason to stop: the
    block's work matters more than the page."""
    if not vm.settings.proxy:
        yield
        return
    say = vm.runner.start_part if note else (lambda text: None)
    before = vm.maintenance_state()
    if before is not None:
        vm.runner.say(f"maintenance mode is on already ({describe_maintenance(before)}): it "
                      "stays on after this")
        yield
        return
    text = page(vm.settings)
    try:
        try:
            turn_on(vm, reason, text)
            say("maintenance on")
        except DeployError as exc:
            vm.runner.say(f"warning: maintenance mode could not be turned on, users get "
                          f"errors while the app is down: {exc.message}")
        yield
    finally:
        try:
            with sigint_deferred():
                turn_off(vm)
            say("maintenance off")
        except Exception as exc:  # the connection may be gone: say what is left
            vm.runner.say(f"warning: maintenance mode is still on for "
                          f"{', '.join(bluegreen.hosts(vm.settings))} ({exc}); `fab maintenance "
                          "off` ends it")
