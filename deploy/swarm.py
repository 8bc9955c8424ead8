"""`target = "swarm"`: the release goes out as a Docker Swarm stack from a manager VM.

The same lock, pull, backup and migrate-before-switch as on compose, then the switch is
`docker stack deploy` of the compose file as `docker compose config` renders it (a stack reads
no .env), with the app service rolling `start-first`, checked by its healthcheck, and rolled back
by Swarm itself (`failure_action: rollback`) when a new task fails. The app service is
`endpoint_mode: dnsrr` and publishes no port: a proxy in the stack (Caddy with
`dynamic a tasks.SERVICE`) reaches its tasks by name, on a host-mode port. The routing mesh is
not used (it needs IPVS in the kernel). `fab rollback --tag=T` deploys the stack again at T
(never `docker service rollback`, which knows only one step back). The release history and `.env`
on the manager are kept as on compose.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from deploy import envcheck, refs
from deploy.commands import swarm as cmd
from deploy.commands.vm import BACKUP_DIR
from deploy.errors import DeployError
from deploy.remote import (
    Vm,
    cut_short,
    last_revision,
    pick_rollback_tag,
    release_entry,
    sigint_deferred,
)
from deploy.remote.signals import exit_code, signal_name
from deploy.shell import ConnectionLost

UPDATE = {"parallelism": 1, "order": "start-first", "failure_action": "rollback",
          "monitor": "10s"}
ROLLBACK = {"parallelism": 1, "order": "start-first", "failure_action": "pause"}
# Keys `docker stack deploy` ignores or refuses (build, restart) or that stack files lack.
DROPPED = ("container_name", "depends_on", "build", "restart", "links", "pull_policy",
           "profiles", "env_file")
VOLUME_KEYS = ("type", "source", "target", "read_only", "consistency", "volume", "tmpfs")
POLL = 0.5


def stack_file(config: dict, service: str) -> dict:
    """The stack file for `docker stack deploy` from `docker compose config --format json`.

    The app `service` rolls start-first with Swarm's rollback and is reached by DNS round robin
    (no published port); other services' published ports are host-mode (no routing mesh).
    """
    services = config.get("services") or {}
    if service not in services:
        raise DeployError(f"the compose file has no service '{service}'",
                          "set `service` in deploy.toml to the app's service")
    out: dict = {"version": "3.8", "services": {}}
    for name, spec in services.items():
        s = {k: v for k, v in spec.items() if v is not None and k not in DROPPED}
        if isinstance(s.get("networks"), dict):
            s["networks"] = list(s["networks"])
        if s.get("volumes"):
            s["volumes"] = [_volume(v) for v in s["volumes"]]
        if name == service:
            s.pop("ports", None)
            deploy = dict(s.get("deploy") or {})
            deploy["endpoint_mode"] = "dnsrr"
            deploy["update_config"] = {**(deploy.get("update_config") or {}), **UPDATE}
            deploy["rollback_config"] = {**(deploy.get("rollback_config") or {}), **ROLLBACK}
            s["deploy"] = deploy
        elif s.get("ports"):
            s["ports"] = [_host_port(p) for p in s["ports"]]
        out["services"][name] = s
    networks = {}
    for name, net in (config.get("networks") or {}).items():
        net = net or {}
        networks[name] = ({"external": True, "name": net["name"]} if net.get("external")
                          else {"driver": "overlay", "attachable": True})
    if networks:
        out["networks"] = networks
    for key in ("volumes", "configs", "secrets"):
        if config.get(key):
            out[key] = config[key]
    return out


def _volume(v: dict | str) -> dict | str:
    if not isinstance(v, dict):
        return v
    out = {k: v[k] for k in VOLUME_KEYS if k in v}
    if isinstance(v.get("bind"), dict) and v["bind"].get("propagation"):
        out["bind"] = {"propagation": v["bind"]["propagation"]}
    return out


def _host_port(p: dict | str) -> dict | str:
    if not isinstance(p, dict):
        return p
    out = {"target": int(p["target"]), "mode": "host", "protocol": p.get("protocol", "tcp")}
    if p.get("published"):
        out["published"] = int(p["published"])
    return out


# -- convergence -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One task of the service, as `docker service ps` shows it."""

    name: str
    image: str
    desired: str
    state: str
    error: str = ""
    id: str = ""
    node: str = ""

    @property
    def tag(self) -> str:
        return without_digest(self.image).rsplit(":", 1)[-1]

    def line(self) -> str:
        return (f"{self.name} {self.tag}: {self.state}" + (f" on {self.node}" if self.node
                                                            else "")
                + (f" ({self.error})" if self.error else ""))


def without_digest(image: str) -> str:
    return image.split("@", 1)[0]


def parse_tasks(output: str) -> list[Task]:
    tasks = []
    for line in output.splitlines():
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue
        # "Running 5 seconds ago" -> "Running"; "Shutdown" -> "Shutdown"
        state = (raw.get("CurrentState") or "").split(" ", 1)[0]
        tasks.append(Task(raw.get("Name", "").strip(" \\_"), raw.get("Image", ""),
                          raw.get("DesiredState", ""), state, raw.get("Error", ""),
                          raw.get("ID", ""), raw.get("Node", "")))
    return tasks


@dataclass(frozen=True)
class ServiceState:
    image: str  # the spec's image, without its digest
    update: str  # UpdateStatus.State ('' before the first update)
    message: str
    replicas: int


def parse_service(output: str) -> ServiceState:
    raw = json.loads(output)
    spec = raw.get("Spec", {})
    status = raw.get("UpdateStatus") or {}
    replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
    image = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "")
    return ServiceState(without_digest(image), status.get("State", ""),
                        status.get("Message", ""), int(replicas))


def verdict(service: ServiceState, tasks: list[Task], ref: str) -> tuple[str, str]:
    """("wait" | "done" | "rolled_back" | "paused", why) for a stack deployed at `ref`."""
    if service.image != ref:
        if service.update.startswith("rollback"):
            return ("rolled_back" if service.update == "rollback_completed" else "wait",
                    service.message)
        return "wait", f"the service runs {service.image}"
    if service.update in ("paused", "rollback_paused"):
        return "paused", service.message
    if service.update in ("updating", "rollback_started"):
        return "wait", service.message
    wanted = [t for t in tasks if t.desired == "Running"]
    ready = [t for t in wanted if t.state == "Running" and without_digest(t.image) == ref]
    if len(ready) >= service.replicas and len(wanted) == len(ready):
        return "done", f"{len(ready)}/{service.replicas} task(s) running {ref}"
    return "wait", f"{len(ready)}/{service.replicas} task(s) running {ref}"


# -- the flow on the manager --------------------------------------------------------------
def stack_name(vm: Vm) -> str:
    return vm.settings.stack or vm.project


def require_manager(vm: Vm) -> None:
    if vm.runner.dry_run:
        return
    state = vm.run(cmd.swarm_state(), quiet=True, check=False).stdout.strip()
    if state != "active":
        raise DeployError(f"the Docker engine on {vm.runner.where} is not in a swarm "
                          f"(state: {state or 'unknown'}); nothing was changed",
                          "`fab setup` makes it a one-node swarm manager (`docker swarm init`); "
                          "or point `host` at a manager")


def ensure_swarm(vm: Vm) -> None:
    """`fab setup`: make this engine a swarm manager unless it is in a swarm already."""
    state = "" if vm.runner.dry_run else vm.run(cmd.swarm_state(), quiet=True).stdout.strip()
    if state == "active":
        vm.runner.say(f"{vm.runner.where}: already in a swarm")
        return
    host = vm.settings.host
    advertise = host if host.replace(".", "").isdigit() else ""
    # hidden: what `swarm init` prints is the join command, with the worker token in it
    vm.run(cmd.swarm_init(advertise), hide=True, what="`docker swarm init` failed",
           fix="see its message")
    vm.runner.say(f"{vm.runner.where}: a one-node swarm manager now (join tokens: "
                  "`docker swarm join-token worker` on it)")


def render(vm: Vm, tag: str) -> str:
    """The stack file (JSON, which YAML readers take) for `tag`."""

    if vm.compose_kind() != "v2":
        raise DeployError("target = \"swarm\" needs `docker compose` (v2) on the manager to "
                          "render the stack file", "install the compose plugin on the VM")
    if vm.runner.dry_run:
        vm.run(cmd.render_config(vm.compose(tag)))
        return "{}"
    result = vm.run(cmd.render_config(vm.compose(tag)),
                    quiet=True, what="`docker compose config` failed on the VM",
                    fix="fix the compose file (`inv check` reads it too)")
    return json.dumps(stack_file(json.loads(result.stdout), vm.settings.service), indent=1)


def converge(vm: Vm, tag: str, timeout: float) -> tuple[str, str]:
    """Poll the app service until Swarm is done with `tag`; print each task's state changes.
    Returns (verdict, why): done, rolled_back, paused, or timeout."""
    name = cmd.service_name(stack_name(vm), vm.settings.service)
    ref = vm.ref(tag)
    seen: dict[str, str] | None = None
    end = time.monotonic() + timeout
    why = started_rollback = ""
    while time.monotonic() < end:
        raw = vm.run(cmd.service_inspect(name), quiet=True, check=False)
        if raw.ok and raw.stdout.strip():
            tasks = parse_tasks(vm.run(cmd.service_tasks(name), quiet=True,
                                       check=False).stdout)
            for task in tasks:  # at first the tasks that run; then every change
                if (seen is None and task.desired != "Running") or \
                        (seen is not None and seen.get(task.id) == task.state):
                    continue
                vm.runner.say(f"  task {task.line()}")
            seen = {t.id: t.state for t in tasks}
            service = parse_service(raw.stdout)
            if service.update == "rollback_started" and not started_rollback:
                started_rollback = service.message
            state, why = verdict(service, tasks, ref)
            if state != "wait":
                return state, (started_rollback or why) + failed_task(vm, tasks, tag)
        time.sleep(POLL)
    return "timeout", why


def failed_task(vm: Vm, tasks: list[Task], tag: str) -> str:
    """What the newest task of `tag` that did not make it said, and its last health check."""
    failed = sorted((t for t in tasks if t.tag == tag and t.desired != "Running"),
                    key=lambda t: not (t.error or t.state in ("Failed", "Rejected", "Complete")))
    if not failed:
        return ""
    task = failed[0]
    health = vm.run(cmd.task_last_health(task.id), quiet=True, check=False).stdout.strip()
    return (f"; its task: {task.state}" + (f", {task.error}" if task.error else "")
            + (f"; its last health check: {health[-200:]}" if health else ""))


def stack_switch(vm: Vm, tag: str, previous: str) -> None:
    """Deploy the stack at `tag` and wait for Swarm; a rollback by Swarm is an error that says
    what the failed task said."""
    stack = stack_name(vm)
    text = render(vm, tag)
    try:
        vm.run(cmd.stack_deploy(stack), stdin=text,
               what=f"`docker stack deploy` of {tag} failed", fix="see the message above")
        if vm.runner.dry_run:
            return
        state, why = converge(vm, tag, vm.settings.swarm_timeout)
    except (KeyboardInterrupt, ConnectionLost) as exc:
        # Swarm carries on with an update it was given, without us: say so, record nothing.
        what = signal_name(exc) if isinstance(exc, KeyboardInterrupt) else \
            f"the SSH connection to {exc.where} was lost"
        raise DeployError(
            f"{what} during the stack deploy of {tag}; nothing was recorded, and the service "
            f"runs {previous or 'the previous release'} or, if `docker stack deploy` reached "
            f"the manager, Swarm goes on updating it to {tag} (or rolls it back) on its own",
            "`fab status` shows which release the service runs; run the same deploy again",
            exit_code=exit_code(exc) if isinstance(exc, KeyboardInterrupt) else 1) from None
    if state == "done":
        vm.runner.say(f"swarm: {why}")
        return
    back = previous or "the previous release"
    if state == "rolled_back":
        raise DeployError(f"{tag} did not run healthy; Swarm rolled the service back to {back}: "
                          f"{why}", "look at `fab logs`, fix the app and deploy a new tag")
    raise DeployError(f"the stack did not converge on {tag} ({state}: {why})",
                      f"`docker service ps {cmd.service_name(stack, vm.settings.service)}` on "
                      f"the manager shows the tasks; `fab rollback --tag={back}` redeploys "
                      "the previous release")


def deploy(vm: Vm, tag: str, *, git_sha: str = "", message: str = "", lock: bool = True) -> dict:
    """Lock, pull, back up, migrate, then `docker stack deploy` and wait; record the release."""
    refs.validate_tag(tag)
    started = time.monotonic()
    require_manager(vm)
    with vm.locked(tag, message) if lock else contextlib.nullcontext():
        envcheck.require_app_env(vm)
        previous = vm.current_tag()
        vm.sync_release_env(previous)
        step = "pull"
        try:
            digest = vm.pull(tag)
            step = "backup"
            backup = vm.backup(tag)
            step = "migrate"
            revision = vm.migrate(tag, backup)
        except (KeyboardInterrupt, ConnectionLost) as exc:
            raise cut_short(exc, step, tag, previous) from None
        stack_switch(vm, tag, previous)
        with sigint_deferred():
            entry = release_entry(tag, digest, revision or last_revision(vm.records()),
                                  "deploy", previous, git_sha, message,
                                  backup=backup.removeprefix(f"{BACKUP_DIR}/"),
                                  migrated=bool(revision and revision != vm.before_migration))
            if not vm.runner.dry_run:
                vm.record(entry)
                vm.prune_backups(vm.history())
    vm.runner.say(f"deployed {tag} as stack {stack_name(vm)} in "
                  f"{time.monotonic() - started:.1f}s")
    return entry


def rollback(vm: Vm, tag: str = "",
             known_in_registry: Callable[[str], bool] | None = None) -> dict:
    """Deploy the stack again at `tag` (default: the release before the current one)."""
    require_manager(vm)
    history = vm.history()
    current = vm.current_tag()
    target = pick_rollback_tag(history, current, tag)
    entries = {e["tag"]: e for e in history}
    if target not in entries and not (known_in_registry and known_in_registry(target)):
        raise DeployError(f"{target} is neither in the release history nor in the registry",
                          "pick a tag from `fab releases`")
    with vm.locked(target, action="rollback"):
        vm.sync_release_env(current)
        digest = vm.pull(target)
        stack_switch(vm, target, current)
        with sigint_deferred():
            entry = release_entry(target, digest, vm.revision(), "rollback", current)
            if not vm.runner.dry_run:
                vm.record(entry)
    vm.runner.say(f"rolled back stack {stack_name(vm)} to {target}")
    return entry


def status_lines(vm: Vm) -> list[str]:
    """The app service for `fab status`: Swarm's verdict on the recorded release (its own
    rollback included) and each running task with its node."""
    name = cmd.service_name(stack_name(vm), vm.settings.service)
    raw = vm.run(cmd.service_inspect(name), quiet=True, check=False)
    if not (raw.ok and raw.stdout.strip()):
        return [f"swarm:     {name}: no such service ({raw.output.strip() or 'no answer'})"]
    service = parse_service(raw.stdout)
    tasks = parse_tasks(vm.run(cmd.service_tasks(name), quiet=True, check=False).stdout)
    release = vm.current_tag()
    state, why = verdict(service, tasks, vm.ref(release)) if release else ("wait", "")
    lines = [f"swarm:     {name}: " + ({"done": "serving", "wait": "not settled",
                                        "paused": "update paused",
                                        "rolled_back": "rolled back by Swarm"}[state]
                                       + (f" ({why})" if why else ""))]
    if state == "wait" and release and verdict(service, tasks, service.image)[0] == "done":
        # settled, on another image than the recorded release (a deploy cut short after
        # `docker stack deploy` reached the manager)
        running = service.image.rsplit(":", 1)[-1]
        lines = [f"swarm:     {name}: serving {service.image}, not the recorded release "
                 f"{release}",
                 f"  fix: `fab deploy --tag={running}` records it, or `fab rollback "
                 f"--tag={release}` puts the recorded release back"]
    if service.update:
        lines.append(f"  update:  {service.update}"
                     + (f" ({service.message})" if service.message else ""))
    return lines + [f"  {t.line()}" for t in tasks if t.desired == "Running"]


def logs(vm: Vm, tail: int, follow: bool) -> None:
    """The app service's logs, every task's (`docker service logs`)."""
    name = cmd.service_name(stack_name(vm), vm.settings.service)
    vm.run(cmd.service_logs(name, tail, follow), check=False)
