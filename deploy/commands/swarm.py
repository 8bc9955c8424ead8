"""Docker Swarm commands that run on a manager VM, as argument lists. Nothing here
opens a connection; deploy/release/swarm.py runs them."""

from __future__ import annotations

from deploy.commands.vm import helper

SWARM_STATE = "{{.Swarm.LocalNodeState}}"


def swarm_state() -> list[str]:
    """`active`, `inactive`, `pending`, ... of this engine."""
    return ["docker", "info", "--format", SWARM_STATE]


def swarm_init(advertise_addr: str = "") -> list[str]:
    return ["docker", "swarm", "init", *(["--advertise-addr", advertise_addr]
                                         if advertise_addr else [])]


def join_token() -> list[str]:
    """The worker join token alone (a secret: run quietly, never printed)."""
    return ["docker", "swarm", "join-token", "--quiet", "worker"]


def manager_address() -> list[str]:
    """The address this manager's swarm listens on (what workers join)."""
    return ["docker", "info", "--format", "{{.Swarm.NodeAddr}}"]


def swarm_membership() -> list[str]:
    """This engine's swarm state, then the managers it knows (`ADDR:PORT`), one line."""
    return ["docker", "info", "--format",
            "{{.Swarm.LocalNodeState}} {{range .Swarm.RemoteManagers}}{{.Addr}} {{end}}"]


def swarm_join(token: str, manager: str, advertise_addr: str = "") -> list[str]:
    """Join `manager`'s swarm (`ADDR:2377`) as a worker. The token is on the worker's own
    command line for the moment the CLI runs (docker reads it nowhere else); the runner keeps
    it out of the output."""
    return ["docker", "swarm", "join", "--token", token,
            *(["--advertise-addr", advertise_addr] if advertise_addr else []), manager]


def render_config(compose_argv: list[str]) -> list[str]:
    """The compose file with every variable resolved (`docker stack deploy` reads no .env)."""
    return [*compose_argv, "config", "--format", "json"]


def stack_deploy(stack: str) -> list[str]:
    """Deploy the stack file given on stdin; services no longer in it are removed."""
    return ["docker", "stack", "deploy", "--with-registry-auth", "--prune",
            "--compose-file", "-", stack]


def service_name(stack: str, service: str) -> str:
    return f"{stack}_{service}"


def service_inspect(name: str) -> list[str]:
    return ["docker", "service", "inspect", "--format", "{{json .}}", name]


def service_scale(name: str, replicas: int) -> list[str]:
    """Set the service's replicas, returning at once (the caller waits for its tasks)."""
    return ["docker", "service", "scale", "--detach", f"{name}={int(replicas)}"]


def service_tasks(name: str) -> list[str]:
    """One JSON line per task of the service (its current and recent tasks)."""
    return ["docker", "service", "ps", "--no-trunc", "--format", "{{json .}}", name]


def service_logs(name: str, tail: int, follow: bool) -> list[str]:
    return ["docker", "service", "logs", "--no-trunc", "--tail", str(int(tail)),
            *(["--follow"] if follow else []), name]


def task_last_health(task_id: str) -> list[str]:
    """The last line of the last health check a task's container ran ('' if none)."""
    return helper("task-last-health", task_id)


def secret_exists(name: str) -> list[str]:
    return ["docker", "secret", "inspect", "--format", "{{.ID}}", name]


def secret_create(name: str, label: str) -> list[str]:
    """A secret from stdin (its content never on a command line)."""
    return ["docker", "secret", "create", "--label", label, name, "-"]


def secret_list(label: str) -> list[str]:
    """`CREATED<TAB>NAME` of the secrets with `label`, one a line."""
    return ["docker", "secret", "ls", "--filter", f"label={label}", "--format",
            "{{.CreatedAt}}\t{{.Name}}"]


def secret_remove(names: list[str]) -> list[str]:
    return ["docker", "secret", "rm", *names]


def image_start(ref: str) -> list[str]:
    """The image's ENTRYPOINT and CMD, as JSON, tab-separated."""
    return ["docker", "image", "inspect", "--format",
            "{{json .Config.Entrypoint}}\t{{json .Config.Cmd}}", ref]
