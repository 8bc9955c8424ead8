"""`target = "swarm"`: the release goes out as a Docker Swarm stack from a manager VM.

The same lock, pull, backup and migrate-before-switch as on compose, then the switch is
`docker stack deploy` of the compose file as `docker compose config` renders it (a stack reads
no .env), with the app service rolling `start-first`, checked by its healthcheck, and rolled back
by Swarm itself (`failure_action: rollback`) when a new task fails. The app service is
`endpoint_mode: dnsrr` and publishes no port: a proxy in the stack (Caddy with
`dynamic a tasks.SERVICE`) reaches its tasks by name, on a host-mode port. The routing mesh is
not used (it needs IPVS in the kernel). `fab rollback --tag=T` deploys the stack again at T
(never `docker service rollback`, which knows only one step back). Deploy and rollback are the
one-host flows of deploy/vm/flows.py with this module's switch (deploy/release/switch.py):
the release history and `.env` on the manager are kept as on compose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import time
from dataclasses import dataclass

from deploy.commands import swarm as cmd
from deploy.core.errors import DeployError
from deploy.vm.session import session
from deploy.vm.session import targets as remote_targets
from deploy.vm.shell import ConnectionLost
from deploy.vm.signals import exit_code, signal_name
from deploy.vm.steps import Vm

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


def parse_membership(output: str) -> tuple[str, list[str]]:
    """`swarm_membership` output -> (state, the managers' ADDR:PORT it knows)."""
    words = output.split()
    return (words[0], words[1:]) if words else ("unknown", [])


def join_workers(manager: Vm) -> None:
    """`fab setup`: each host of `swarm_workers` joins the manager's swarm as a worker, unless
    it is in it already; one in another swarm is refused. The join token is read quietly and
    redacted: it is printed nowhere."""
    s = manager.settings
    names = [h.strip() for h in s.swarm_workers.split(",") if h.strip()]
    if not names:
        return
    dry_run = manager.runner.dry_run
    address = "MANAGER" if dry_run else manager.run(cmd.manager_address(),
                                                     quiet=True).stdout.strip()
    if not dry_run and not address:
        raise DeployError(f"{manager.runner.where} reports no swarm address to join",
                          "run `fab setup` again (it makes the manager first)")
    joined = f"{address}:2377"
    token = ""
    for target in remote_targets(s, names):
        # the worker has no app directory: its shell stays in the login directory
        settings = dataclasses.replace(s, host=target.host, app_dir="")
        with session(settings, target, dry_run=dry_run) as worker:
            where = worker.runner.where
            state, managers = parse_membership(
                "" if dry_run else worker.run(cmd.swarm_membership(), quiet=True).stdout)
            if state == "active":
                if joined not in managers:
                    raise DeployError(
                        f"{where} is in another swarm (managers {', '.join(managers) or '?'}, "
                        f"not {joined}); nothing was changed there",
                        f"leave that swarm on {where} first (`docker swarm leave`: it breaks "
                        "name lookup for the containers created before; recreate them), or "
                        "remove it from swarm_workers")
                worker.runner.say(f"{where}: already a node of the swarm of {address}")
                continue
            if not token and not dry_run:
                token = manager.run(cmd.join_token(), quiet=True).stdout.strip()
                manager.runner.secrets.append(token)
            worker.runner.secrets.append(token)
            advertise = target.host if target.host.replace(".", "").isdigit() else ""
            worker.run(cmd.swarm_join(token or "TOKEN", joined, advertise), hide=True,
                       what=f"{where} could not join the swarm of {address}",
                       fix=f"{where} must reach {joined} (TCP 2377, 7946 TCP/UDP, 4789 UDP)")
            worker.runner.say(f"{where}: joined the swarm of {address} as a worker")


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
    stack = stack_file(json.loads(result.stdout), vm.settings.service)
    env = (stack["services"][vm.settings.service].get("environment") or {})
    if env:
        name = env_secret_name(stack_name(vm), vm.settings.service, env)
        if not vm.run(cmd.secret_exists(name), quiet=True, check=False).ok:
            vm.run(cmd.secret_create(name, env_label(stack_name(vm), vm.settings.service)),
                   stdin=env_file_text(env), hide=True,
                   what="`docker secret create` of the app's environment failed",
                   fix="see the message above")
        entrypoint, command = parse_image_start(vm.run(
            cmd.image_start(vm.ref(tag)), quiet=True, what=f"{vm.ref(tag)} is not on the "
            "manager", fix="deploy again (the deploy pulls it first)").stdout)
        env_through_secret(stack, vm.settings.service, name, entrypoint, command)
    return json.dumps(stack, indent=1)


# The app's environment reaches its tasks as a Docker secret, sourced by a shell before the
# image's own start: `docker service inspect` (and anyone reading the service's spec) sees
# no value of it.
ENV_SECRET = "deploy-env"
# (`$$`: `docker stack deploy` interpolates the stack file as compose does)
ENV_WRAPPER = f'. /run/secrets/{ENV_SECRET} && exec "$$@"'
KEEP_ENV_SECRETS = 3  # the current one and those Swarm's own rollback may go back to


def env_file_text(env: dict) -> str:
    """`export KEY='value'` lines a POSIX shell sources (values of `None`: unset keys)."""
    return "".join(f"export {key}={shlex.quote(str(value))}\n"
                   for key, value in sorted(env.items()) if value is not None)


def env_secret_name(stack: str, service: str, env: dict) -> str:
    """Secrets are immutable: one per content, named after its hash."""
    digest = hashlib.sha256(env_file_text(env).encode()).hexdigest()[:12]
    return f"{stack}_{service}_env_{digest}"


def env_label(stack: str, service: str) -> str:
    return f"deploy.env={stack}_{service}"


def parse_image_start(output: str) -> tuple[list[str], list[str]]:
    """`image_start` output (two JSON values on a line) -> (Entrypoint, Cmd)."""
    first, _, second = output.strip().partition("\t")
    return (json.loads(first or "null") or []), (json.loads(second or "null") or [])


def env_through_secret(stack: dict, service: str, secret: str, entrypoint: list[str],
                       command: list[str]) -> None:
    """Move `service`'s environment out of the stack file into the secret `secret`: the
    service mounts it and starts through a shell that sources it, then runs what the image
    (or the compose file's entrypoint/command) would have run."""
    spec = stack["services"][service]
    spec.pop("environment", None)
    start = list(spec.get("entrypoint") or entrypoint)
    if spec.get("command"):
        start += list(spec["command"])
    elif not spec.get("entrypoint"):
        start += list(command)
    if not start:
        raise DeployError(f"the image of '{service}' names no command to start (no ENTRYPOINT "
                          "or CMD) and the compose file none either",
                          f"give service '{service}' a command in the compose file")
    spec["entrypoint"] = ["/bin/sh", "-c", ENV_WRAPPER, ENV_SECRET]
    spec["command"] = start
    spec["secrets"] = [*(spec.get("secrets") or []),
                       {"source": secret, "target": ENV_SECRET, "mode": 0o444}]
    stack.setdefault("secrets", {})[secret] = {"external": True}


def prune_env_secrets(vm: Vm) -> None:
    """Remove the app's environment secrets but the newest KEEP_ENV_SECRETS (one still in use
    is refused by Docker and stays)."""
    listed = vm.run(cmd.secret_list(env_label(stack_name(vm), vm.settings.service)),
                    quiet=True, check=False).stdout.splitlines()
    old = [line.split("\t", 1)[-1] for line in sorted(listed, reverse=True)][KEEP_ENV_SECRETS:]
    if old:
        vm.run(cmd.secret_remove(old), quiet=True, check=False)


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
    try:
        text = render(vm, tag)
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
        prune_env_secrets(vm)
        return
    back = previous or "the previous release"
    if state == "rolled_back":
        raise DeployError(f"{tag} did not run healthy; Swarm rolled the service back to {back}: "
                          f"{why}", "look at `fab logs`, fix the app and deploy a new tag")
    raise DeployError(f"the stack did not converge on {tag} ({state}: {why})",
                      f"`docker service ps {cmd.service_name(stack, vm.settings.service)}` on "
                      f"the manager shows the tasks; `fab rollback --tag={back}` redeploys "
                      "the previous release")


# Task states before a task's container has stopped (`docker service ps`, CurrentState)
LIVE = ("New", "Pending", "Assigned", "Accepted", "Preparing", "Ready", "Starting", "Running")


def scale_to_zero(vm: Vm) -> None:
    """Stop the app service for a restore: scaled to 0, then waited for until none of its
    tasks' containers runs (none holds a connection to the database any more). The next
    `docker stack deploy` sets its replicas back to the stack file's."""
    name = cmd.service_name(stack_name(vm), vm.settings.service)
    vm.run(cmd.service_scale(name, 0), hide=True, what=f"scaling {name} to 0 failed",
           fix="see the message above; `fab status` shows the service")
    if vm.runner.dry_run:
        return
    timeout = vm.settings.swarm_timeout
    end = time.monotonic() + timeout
    while True:
        tasks = parse_tasks(vm.run(cmd.service_tasks(name), quiet=True, check=False).stdout)
        live = [t for t in tasks if t.state in LIVE]
        if not live:
            return
        if time.monotonic() > end:
            raise DeployError(f"{name} was scaled to 0, but after {timeout:.0f}s its tasks "
                              f"still run: {'; '.join(t.line() for t in live)}",
                              f"`docker service ps {name}` on the manager shows why; raise "
                              "swarm_timeout if they only stop slowly")
        time.sleep(POLL)


def start_stack(vm: Vm, tag: str) -> str:
    """After a restore: the stack deployed at `tag` (the app service back at the stack file's
    replicas) and waited for as a switch is (Swarm's healthcheck): '' when its tasks run
    `tag`, else what Swarm did instead. A failed command, a signal or a lost connection is
    raised, as a compose `up` is."""
    vm.run(cmd.stack_deploy(stack_name(vm)), stdin=render(vm, tag),
           what=f"`docker stack deploy` of {tag} failed", fix="see the message above")
    if vm.runner.dry_run:
        return ""
    state, why = converge(vm, tag, vm.settings.swarm_timeout)
    if state == "done":
        vm.runner.say(f"swarm: {why}")
        prune_env_secrets(vm)
        return ""
    if state == "rolled_back":
        return f"{tag} did not run healthy; Swarm rolled the service back: {why}"
    return f"the stack did not converge on {tag} ({state}: {why})"


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
