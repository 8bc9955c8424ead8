"""Zero-downtime releases behind the proxy (Caddy): the blue/green switch on one VM.

A switch starts the new container next to the serving one, waits until it answers the health
path through Caddy (the path users' requests take), points the app at it by renaming a new
upstream file over the old one (Caddy reads it per request: no config reload), then stops the
old container within its stop grace period and removes it. A new container that never turns
healthy is removed; the old one never stops serving. Commands come from `deploy.commands.proxy`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from deploy.commands import proxy as pcmd
from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.vm.health import UpstreamWatch
from deploy.vm.phases import Phase
from deploy.vm.shell import ConnectionLost
from deploy.vm.signals import exit_code, sigint_deferred, signal_name
from deploy.vm.steps import Vm

ADMIN_WAIT = 30.0
ADMIN_POLL = 3  # seconds one look at the admin API waits before the state is read again


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str


def hosts(settings: Settings) -> list[str]:
    """The app's host names (proxy_host, comma-separated)."""
    names = [h.strip() for h in settings.proxy_host.split(",") if h.strip()]
    if not names:
        raise DeployError("setting 'proxy_host' is not set (proxy = true needs the app's "
                          "host name)", "add `proxy_host = \"app.example.com\"` to deploy.toml")
    return names


def project(settings: Settings) -> str:
    """Caddy's compose project name (from proxy_dir: one Caddy per VM)."""
    return cmd.project_name(settings.proxy_dir)


# -- set-up and the proxy tasks ----------------------------------------------------------
def setup(vm: Vm, take_host: bool = False) -> None:
    """Create or update the VM's Caddy (`fab setup`). Starting it is a restart only if its
    compose file changed (image, ports): otherwise the running Caddy just reloads. With
    `take_host`, host names another app's route has are moved to this app."""
    s: Settings = vm.settings
    d = s.proxy_dir
    vm.run(pcmd.requirements(d), cwd="", what="the VM cannot run the proxy",
           fix="install them on the VM (apt-get install -y curl util-linux)")
    head, tail = pcmd.config_parts(s.proxy_tls, s.proxy_email)
    compose_text = pcmd.compose_project(s.proxy_image, s.proxy_network, s.proxy_http_port,
                                        s.proxy_https_port)
    # The remote shell ends stdin with a newline of its own.
    vm.run(pcmd.write_base(d, head, tail), stdin=compose_text.rstrip("\n"), cwd="")
    vm.run(pcmd.assemble(d), cwd="")
    vm.run(pcmd.ensure_network(d, s.proxy_network), cwd="", hide=True)
    vm.run([*caddy_compose(vm), "up", "-d"], cwd="", hide=True,
           what=f"starting the proxy ({s.proxy_image}) failed",
           fix=f"check that the VM has the image {s.proxy_image} and the ports "
               f"{s.proxy_http_port}, {s.proxy_https_port} are free")
    vm.run(pcmd.wait_admin(d, ADMIN_WAIT), cwd="", quiet=True,
           what=f"the proxy's admin API did not answer within {ADMIN_WAIT:.0f}s",
           fix="look at `fab proxy logs`")
    reload(vm)
    ensure_route(vm, take_host)


def ensure_route(vm: Vm, take_host: bool = False) -> None:
    """The app's route in Caddy's config, loaded if it was missing or its hosts changed. A
    host name another app's route has is refused (nothing changes) unless `take_host`."""
    s = vm.settings
    names = hosts(s)
    if take_host:
        take_hosts(vm, host_claims(vm))
    route = json.dumps(pcmd.route(vm.project, names), separators=(",", ":"))
    result = vm.run(pcmd.set_route(s.proxy_dir, vm.project, route, s.app_dir, names), cwd="",
                    hide=True, check=False)
    if result.exited == pcmd.HOST_TAKEN_EXIT:
        raise host_taken(parse_claims(result.stdout))
    if not result.ok:
        tail = "\n".join(result.output.splitlines()[-15:])
        raise DeployError("Caddy refused the app's route; it keeps running the previous config"
                          + (f"\n{tail}" if tail else ""),
                          "look at the error above and at `fab proxy logs`")


# -- host names: each is one app's ------------------------------------------------------
def parse_claims(out: str) -> list[tuple[str, str, str]]:
    """`PROJECT DIR HOST` lines -> (project, app_dir, host) tuples."""
    claims = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            claims.append((parts[0], parts[1], parts[2]))
    return claims


def host_claims(vm: Vm) -> list[tuple[str, str, str]]:
    """(project, app_dir, host) for each of this app's hosts that another app's route has."""
    if vm.runner.dry_run:
        return []
    s = vm.settings
    out = vm.run(pcmd.host_owners(s.proxy_dir, vm.project, hosts(s)), cwd="", quiet=True,
                 check=False).stdout
    return parse_claims(out)


def host_taken(claims: list[tuple[str, str, str]]) -> DeployError:
    names = ", ".join(dict.fromkeys(h for _, _, h in claims))
    owners = "; ".join(dict.fromkeys(
        f"project {p}" + (f" in {d}" if d != "-" else "") for p, d, _ in claims))
    return DeployError(
        f"the proxy already serves {names} for another app ({owners}); this app may not take "
        "it over unasked: nothing was changed",
        "give this app a proxy_host of its own, or move the host name to it with "
        "`fab setup --take-host` (the other app then no longer answers to it)")


def check_hosts(vm: Vm) -> None:
    """Refuse, before anything changes, when another app's route has one of our hosts."""
    claims = host_claims(vm)
    if claims:
        raise host_taken(claims)


def take_hosts(vm: Vm, claims: list[tuple[str, str, str]]) -> None:
    """Move the claimed host names to this app: each other app's route is rewritten without
    them (removed if none is left), saying so."""
    s = vm.settings
    for other, directory in dict.fromkeys((p, d) for p, d, _ in claims):
        taken = [h for p, _, h in claims if p == other]
        text = vm.run(pcmd.read_route(s.proxy_dir, other), cwd="", quiet=True,
                      check=False).stdout
        try:
            had = json.loads(text)["match"][0]["host"]
        except (ValueError, KeyError, IndexError, TypeError):
            had = []
        left = [h for h in had if h not in taken]
        if left:
            route = json.dumps(pcmd.route(other, left), separators=(",", ":"))
            vm.run(pcmd.set_route(s.proxy_dir, other, route, directory, left), cwd="",
                   hide=True, what=f"could not rewrite project {other}'s route without "
                   f"{', '.join(taken)}; nothing was moved", fix="see the error above")
        else:
            vm.run(pcmd.drop_route(s.proxy_dir, other), cwd="", hide=True,
                   what=f"could not remove project {other}'s route; nothing was moved",
                   fix="see the error above")
        where = f" ({directory})" if directory != "-" else ""
        vm.runner.say(f"took {', '.join(taken)} from project {other}{where}: "
                      + (f"it keeps {', '.join(left)}" if left else
                         "it has no host name left behind the proxy"))


def ensure_running(vm: Vm) -> None:
    """Before a switch: Caddy answers on its admin socket. A Caddy container that is not
    running is started (saying so); one that will not answer is reported as the proxy's
    failure, with its last log lines."""
    s = vm.settings
    if vm.runner.dry_run:
        return
    if vm.run(pcmd.wait_admin(s.proxy_dir, 0), cwd="", quiet=True, check=False).ok:
        return
    # A Caddy being killed still shows as running for a moment: look again while it does not
    # answer (a `docker kill` is a manual stop: its restart policy does not bring it back).
    started = start_if_down(vm)
    deadline = time.monotonic() + ADMIN_WAIT
    while not vm.run(pcmd.wait_admin(s.proxy_dir, ADMIN_POLL), cwd="", quiet=True,
                     check=False).ok:
        if time.monotonic() > deadline:
            break
        if not started:  # once: a Caddy that exits again after a start will not answer
            started = start_if_down(vm)
    else:
        return
    logs = vm.run([*caddy_compose(vm), "logs", "--no-color", "--tail", "8"], cwd="",
                  quiet=True, check=False).output.strip()
    raise DeployError(
        f"the proxy (Caddy) is failing: its admin API did not answer within "
        f"{ADMIN_WAIT:.0f}s ({'after a start' if started else 'it runs'}); "
        "every app behind it is down; nothing was switched"
        + (f"\nits last log lines:\n{logs}" if logs else ""),
        "fix the proxy, not the app: look at `fab proxy logs`; `fab setup` rewrites "
        "its config and starts it")


def start_if_down(vm: Vm) -> bool:
    """Start the Caddy container if it is not running (saying so); whether it was started."""
    s = vm.settings
    out = vm.run(pcmd.service_containers(project(s), pcmd.SERVICE), quiet=True,
                 check=False).stdout.split()
    state = out[2] if len(out) >= 3 else "missing"
    if state == "running":
        return False
    vm.runner.say(f"the proxy (Caddy) on {vm.runner.where} was {state}: every app behind "
                  "it was down; starting it")
    vm.run([*caddy_compose(vm), "up", "-d"], cwd="", hide=True,
           what=f"the proxy (Caddy) was {state} and starting it failed: every app behind "
                "it is down; nothing was switched",
           fix="`fab setup` sets the proxy up again; `fab proxy logs` shows why it stopped")
    return True


def caddy_compose(vm: Vm) -> list[str]:
    s = vm.settings
    return cmd.compose(vm.compose_kind(), f"{s.proxy_dir}/compose.json", project(s))


def reload(vm: Vm) -> None:
    """Rebuild Caddy's config from the app routes and load it: no restart, no dropped
    connection."""
    vm.run(pcmd.reload(vm.settings.proxy_dir), cwd="", hide=True,
           what="Caddy refused the new config; it keeps running the previous one",
           fix="look at the error above and at `fab proxy logs`")


def status_lines(vm: Vm) -> list[str]:
    """What `fab status` and `fab proxy status` show about the proxy."""
    s = vm.settings
    upstream = serving_upstream(vm)
    lines = [f"proxy:     {', '.join(hosts(s))} -> {upstream or '(no route yet)'}"]
    if upstream and not vm.runner.dry_run:
        code = vm.run(pcmd.probe(s.proxy_dir, upstream, hosts(s)[0], s.health_path),
                      cwd="", quiet=True, check=False).stdout.strip()
        lines.append(f"upstream:  {s.health_path} through Caddy answers {code or 'nothing'}")
    own = containers(vm)
    for c in own:
        mark = "*" if upstream.startswith(c.name + ":") else " "
        lines.append(f"  {mark} {c.name:<32} {c.state}")
    lines += route_warnings(vm, bool(upstream or own)) + upstream_warnings(vm, upstream, own)
    caddy = vm.run([*caddy_compose(vm), "ps", "--format", "{{.Name}} {{.Status}}"]
                   if vm.compose_kind() == "v2" else [*caddy_compose(vm), "ps"],
                   cwd="", quiet=True, check=False)
    lines.append(f"caddy:     {caddy.stdout.strip() or 'not running (fab setup starts it)'}")
    return lines


def route_warnings(vm: Vm, deployed: bool) -> list[str]:
    """A warning and its fix when the app's host names do not lead to its route: the route
    is gone, or names other hosts, or another app's route has one of them too."""
    if vm.runner.dry_run:
        return []
    s = vm.settings
    names = hosts(s)
    text = vm.run(pcmd.read_route(s.proxy_dir, vm.project), cwd="", quiet=True,
                  check=False).stdout
    try:
        routed = json.loads(text)["match"][0]["host"]
    except (ValueError, KeyError, IndexError, TypeError):
        routed = None
    lines = []
    if routed is None and deployed:
        lines += [f"warning: the proxy has no route for this app: requests for "
                  f"{', '.join(names)} do not reach it",
                  "  fix: `fab setup` makes it (`fab setup --take-host` if another app "
                  "serves the name now)"]
    elif routed is not None and sorted(routed) != sorted(names):
        lines += [f"warning: the app's route has {', '.join(routed)}, not proxy_host "
                  f"{', '.join(names)}", "  fix: `fab setup` loads the route of proxy_host"]
    for other, directory, host in host_claims(vm):
        where = f" in {directory}" if directory != "-" else ""
        lines += [f"warning: project {other}{where} has {host} in its route too: the proxy "
                  "may send its requests to either app",
                  f"  fix: `fab setup --take-host` in the app that should serve {host}"]
    return lines


def upstream_warnings(vm: Vm, upstream: str, own: list[Container]) -> list[str]:
    """A warning and its fix when the route does not send the app's hosts to a running
    container of the app: no upstream file, or one naming another container."""
    if vm.runner.dry_run:
        return []
    s = vm.settings
    running = [c for c in own if c.state == "running"]
    path = f"{s.proxy_dir}/{pcmd.upstream_path(vm.project)}"
    if not upstream:
        if not own:
            return []  # nothing deployed yet: no route is what is expected
        problem = (f"warning: {path} is missing: the proxy sends {', '.join(hosts(s))} to no "
                   "container of this app")
    else:
        named = next((c for c in own if upstream.startswith(c.name + ":")), None)
        if named and named.state == "running":
            return []
        problem = (f"warning: the proxy sends {', '.join(hosts(s))} to {upstream}, "
                   + (f"a container of this app that is {named.state}" if named else
                      f"which is not a container of this app (project {vm.project})"))
    tag = vm.current_tag()
    fix = (f"  fix: `fab deploy --tag={tag}` starts a fresh container of {tag} and points the "
           "proxy at it" if tag else "  fix: deploy a release (`fab deploy --tag=T`)")
    if running:
        fix += f" ({', '.join(c.name for c in running)} runs but gets no request)"
    return [problem, fix]


# -- the switch --------------------------------------------------------------------------
def containers(vm: Vm) -> list[Container]:
    if vm.runner.dry_run:
        return []
    out = vm.run(pcmd.service_containers(vm.project, vm.settings.service), quiet=True,
                 check=False).stdout
    return [Container(*line.split()[:3]) for line in out.splitlines() if len(line.split()) >= 3]


def serving_upstream(vm: Vm) -> str:
    """The container:port the app's route sends traffic to ('' before the first switch)."""
    if vm.runner.dry_run:
        return ""
    return vm.run(pcmd.read_upstream(vm.settings.proxy_dir, vm.project), quiet=True,
                  check=False, cwd="").stdout.strip()


def switch(vm: Vm, tag: str, times: dict[str, float] | None = None) -> tuple[str, str]:
    """Blue/green switch to `tag`: (problem, container). `problem` is '' when `tag` serves;
    otherwise the new container was removed and the old one serves on, untouched. The old
    container is stopped in the background, the deploy does not wait for it: the next switch
    does (wait_retired). `times` gets the seconds the new container took to start and to
    answer through Caddy."""
    s: Settings = vm.settings
    times = {} if times is None else times
    hosts(s)  # proxy_host is set: refused before anything changes on the VM
    ensure_running(vm)
    upstream = serving_upstream(vm)
    before = containers(vm)
    old = [c for c in before if c.state == "running" and upstream.startswith(c.name + ":")]
    leftovers = [c for c in before if c not in old]
    ensure_route(vm)
    if leftovers:  # the last switch's old container may still be finishing its requests
        wait_retired(vm, [c.id for c in leftovers])
        leftovers = [c for c in containers(vm) if c.id not in {o.id for o in old}]
    if leftovers:  # an interrupted switch's new container, a stopped one: none serves
        vm.runner.say(f"removing {', '.join(c.name for c in leftovers)}: not serving")
        vm.run(pcmd.remove([c.id for c in leftovers], force=True), hide=True)
    started = time.monotonic()
    vm.run(pcmd.scale_up(vm.compose(tag), s.service, len(old) + 1, deps=not old),
           hide=True, what=f"starting a container of {tag} failed; "
           + (f"{old[0].name} still serves" if old else "nothing was switched"),
           fix="see the output above")
    new = [c for c in containers(vm) if c.id not in {o.id for o in old}]
    if vm.runner.dry_run:  # print the rest of the plan with a stand-in for the new container
        new = [Container("NEW_ID", f"{vm.project}-{s.service}-N", "running")]
    if len(new) != 1:
        raise DeployError(f"expected one new container of {tag}, found "
                          f"{', '.join(c.name for c in new) or 'none'}",
                          "look at `fab status`; the next deploy removes what does not serve")
    fresh = new[0]
    target = f"{fresh.name}:{s.app_port}"
    times["start"] = time.monotonic() - started
    try:
        problem = wait_upstream(vm, fresh.id, target)
    except (KeyboardInterrupt, ConnectionLost, DeployError):
        discard(vm, fresh)
        raise
    times["healthy"] = time.monotonic() - started - times["start"]
    problem = problem or runs_other_image(vm, fresh, tag)
    if problem:
        detail = why_unhealthy(vm, fresh, target, problem)
        discard(vm, fresh)
        return problem + (f"\n{detail}" if detail else ""), ""
    try:  # the health wait may be long: the lock must still be this deploy's
        vm.hold_lock(vm.current_tag() or "the previous version")
    except DeployError:
        discard(vm, fresh)
        raise
    # From here on the switch runs to its end: a Ctrl-C waits (the old one must not be
    # stopped before Caddy points elsewhere, nor left serving a recorded new release).
    with sigint_deferred():
        vm.run(pcmd.set_upstream(s.proxy_dir, vm.project, target), cwd="", hide=True)
        if old:  # it finishes its requests while the deploy records the release, and after
            vm.run(pcmd.retire([c.id for c in old]), hide=True, check=False)
            vm.retiring += [c.id for c in old]
    return "", fresh.name


# Seconds an old container may take to stop: docker kills it at the end of its stop grace
# period (10 s unless the compose file says more), so this is a bound that is never reached
# unless the VM's engine hangs.
RETIRE_WAIT = 120.0


def wait_retired(vm: Vm, container_ids: list[str] | None = None) -> None:
    """Before a switch or a stop of the app: wait until those of the containers (all, if
    None) that an earlier switch retires (stops in the background) are gone, so that none is
    removed by force while it still finishes its requests, nor started again."""
    wait = max(RETIRE_WAIT, vm.settings.health_timeout)
    result = vm.run(pcmd.wait_retired(container_ids or [], wait), quiet=True, check=False)
    if not result.ok:
        vm.runner.say(f"warning: an old container still stops after {wait:.0f}s "
                      f"({result.output.strip()[-200:]}); it is removed now")


# Seconds between two polls of a new container: each is one `docker inspect` and one request
# through Caddy on the VM, cheap next to what a late verdict costs the deploy.
UPSTREAM_POLL = 0.1


def wait_upstream(vm: Vm, container_id: str, upstream: str) -> str:
    """Poll the new container through Caddy (one cheap command per poll over the persistent
    shell) until UpstreamWatch decides or health_timeout passes: '' healthy, else what failed."""
    s = vm.settings
    argv = pcmd.poll(s.proxy_dir, container_id, upstream, hosts(s)[0], s.health_path)
    if vm.runner.dry_run:  # what each poll runs, once
        vm.run(argv, cwd="")
        return ""
    watch = UpstreamWatch()
    verdict: dict[str, str | None] = {"problem": None}

    def decided() -> bool:
        result = vm.run(argv, cwd="", quiet=True, check=False)
        if not result.ok:
            verdict["problem"] = (f"the health poll failed (exit {result.exited}): "
                                  f"{(result.output.splitlines() or [''])[-1]}")
            return True
        state, code, quiet = (result.stdout.split() + ["", "", ""])[:3]
        if code == "proxy-down":  # Caddy stopped under the deploy: start it again
            ensure_running(vm)
            return False
        verdict["problem"] = watch.poll(state, code)
        if verdict["problem"] is None and quiet.isdigit():
            # Docker's health check cannot have run yet, so no verdict comes before: sleep,
            # waking in time for the passes through Caddy to be counted when it does
            lead = (watch.passes + 1) * UPSTREAM_POLL
            time.sleep(min(max(int(quiet) / 1000 - lead, 0), s.health_timeout))
        return verdict["problem"] is not None

    if not vm.wait_ready(decided, s.health_timeout, UPSTREAM_POLL):
        return watch.timed_out()
    return verdict["problem"] or ""


def wait_serving(vm: Vm) -> str:
    """After the app was started again in place (a restore): the container Caddy sends
    traffic to answers health_path through Caddy, the check a switch makes; '' if so, else
    what failed."""
    upstream = serving_upstream(vm)
    running = [c for c in containers(vm) if c.state == "running"]
    serving = [c for c in running if upstream.startswith(c.name + ":")]
    if vm.runner.dry_run:
        serving = [Container("ID", upstream or f"{vm.project}-{vm.settings.service}-N",
                             "running")]
    if not serving:
        return (f"no running container of the app is the one the proxy sends traffic to "
                f"({upstream or 'none recorded'})")
    ensure_running(vm)
    return wait_upstream(vm, serving[0].id, upstream or f"{serving[0].name}:"
                         f"{vm.settings.app_port}")


def why_unhealthy(vm: Vm, container: Container, upstream: str, problem: str) -> str:
    """What the failed container said: its health answer through Caddy if it answers,
    else the end of its logs (a crash)."""
    s = vm.settings
    if problem.startswith("timeout") or problem == "unhealthy":
        body = vm.run(pcmd.probe_body(s.proxy_dir, upstream, hosts(s)[0], s.health_path),
                      quiet=True, check=False, cwd="").stdout.strip()
        if body:
            return f"{s.health_path} through the proxy answered: {body[:300]}"
    logs = vm.run(pcmd.container_logs(container.id), quiet=True, check=False).output
    tail = "\n".join(logs.splitlines()[-8:])
    return f"its last log lines:\n{tail}" if tail else ""


def runs_other_image(vm: Vm, container: Container, tag: str) -> str:
    """'' if the new container runs the image pulled for `tag` (or none was pulled in this
    session), else what it runs."""
    expected = getattr(vm, "pulled", {}).get(tag)
    if not expected:
        return ""
    image = vm.run(pcmd.container_image(container.id), quiet=True, check=False).stdout.strip()
    return "" if image == expected else (
        f"the new container runs image {image[:19] or '-'}, not the one pulled for "
        f"{vm.ref(tag)} ({expected[:19]})")


def serving_fails_too(vm: Vm, problem: str) -> str:
    """When the new container ran but never answered 200 on health_path: the status the
    serving container answers on it, if not 200 either ('' otherwise)."""
    answered = re.match(r"timeout \(\w+, (\d{3}) through the proxy\)", problem)
    # Only a 4xx says the path is wrong: a 5xx is the app's own verdict (both releases may
    # share what is down, the database), and 502 is Caddy not reaching a container at all.
    if not answered or not answered.group(1).startswith("4"):
        return ""
    s = vm.settings
    upstream = serving_upstream(vm)
    if not upstream:
        return ""
    code = vm.run(pcmd.probe(s.proxy_dir, upstream, hosts(s)[0], s.health_path), cwd="",
                  quiet=True, check=False).stdout.strip()
    return code if code == answered.group(1) else ""


def discard(vm: Vm, container: Container) -> None:
    vm.run(pcmd.remove([container.id], force=True), hide=True, check=False)


def settle(vm: Vm, tag: str) -> None:
    """After the switch: the release's other services (workers) brought up to date. The
    compose file rendered with `tag` in this command (the check's) names them (none: nothing
    to run); without it, the VM's compose lists them."""
    config = vm.rendered.get(tag)
    if config is None or vm.runner.dry_run:
        argv = pcmd.settle(vm.compose(tag), vm.settings.service)
    else:
        others = [name for name in config.get("services", {}) if name != vm.settings.service]
        if not others:
            return
        argv = pcmd.settle_services(vm.compose(tag), others)
    vm.run(argv, hide=True, what="`compose up -d` of the other services after the switch "
           "failed", fix="see the output above")


def switch_checked(vm: Vm, tag: str, previous: str, phase: Phase | None = None) -> None:
    """The proxy's switch_checked: `tag` serves on return, else DeployError with the old
    release still serving (it never stopped). `phase` says how long the new container took to
    start and to answer through Caddy."""
    kept = f"{previous or 'the previous version'} kept serving"
    times: dict[str, float] = {}
    try:
        problem, name = switch(vm, tag, times)
    except KeyboardInterrupt as exc:
        raise DeployError(f"{signal_name(exc)} while starting {tag}; {kept} (the proxy was "
                          "not switched, the new container was removed)",
                          "run the same deploy again", exit_code=exit_code(exc)) from None
    except ConnectionLost as exc:
        raise DeployError(f"the SSH connection to {exc.where} was lost while switching to "
                          f"{tag}; {kept} unless the switch had reached the proxy",
                          "`fab status` shows which container serves; run the same deploy "
                          "again (it removes a container that does not serve)") from None
    if problem:
        first, _, detail = problem.partition("\n")
        same = serving_fails_too(vm, first)
        if same:
            raise DeployError(
                f"{tag} did not turn healthy ({first}); {kept}: the proxy was not switched and "
                f"the new container was removed; the serving container answers {same} on "
                f"health_path {vm.settings.health_path} too, so the setting is what is wrong, "
                "not the app", "set health_path (DEPLOY_HEALTH_PATH) to a path the app answers "
                f"200 on, then deploy {tag} again")
        raise DeployError(f"{tag} did not turn healthy ({first}); {kept}: the proxy was not "
                          "switched and the new container was removed"
                          + (f"\n{detail}" if detail else ""),
                          "fix the app and deploy a new tag")
    vm.serving = name
    settle(vm, tag)
    if phase and times:
        phase.result = f"(start {times['start']:.1f}s, healthy {times['healthy']:.1f}s)"

