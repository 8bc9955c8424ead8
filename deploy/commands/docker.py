"""Local Docker commands: build, inspect, run, tag, push, login."""

from __future__ import annotations

import json
import shlex


def ref(image: str, tag: str) -> str:
    return f"{image}:{tag}"


def registry_of(image: str) -> str:
    """The registry host of an image name ('' for Docker Hub)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return ""


def buildx_version() -> list[str]:
    return ["docker", "buildx", "version"]


def engine_info() -> list[str]:
    return ["docker", "info", "--format", "{{.ServerVersion}}"]


def build(
    image_ref: str,
    *,
    context: str,
    dockerfile: str,
    platform: str,
    labels: dict[str, str],
    buildx: bool = True,
) -> list[str]:
    """`docker buildx build --load` (or plain `docker build` when buildx is missing)."""
    argv = ["docker", "buildx", "build", "--load"] if buildx else ["docker", "build"]
    if buildx:
        argv += ["--platform", platform]
    argv += ["--file", dockerfile, "--tag", image_ref]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    return argv + [context]


def image_id(image_ref: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", image_ref]


def run_once(image_ref: str, command: str, env_file: str | None = None) -> list[str]:
    """Run the smoke command in a throwaway container (no shell: argv from the command)."""
    argv = ["docker", "run", "--rm"]
    if env_file:
        argv += ["--env-file", env_file]
    return [*argv, image_ref, *shlex.split(command)]


def has_shell(image_ref: str) -> list[str]:
    """Exit 0 if the image has /bin/sh: it runs an empty script (no entrypoint of the image's)."""
    return ["docker", "run", "--entrypoint", "/bin/sh", "--rm", image_ref, "/dev/null"]


def run_detached(image_ref: str, *, name: str, port: int, env_file: str | None) -> list[str]:
    argv = ["docker", "run", "--detach", "--name", name, "--publish", f"127.0.0.1::{port}"]
    if env_file:
        argv += ["--env-file", env_file]
    return argv + [image_ref]


def port_of(name: str, port: int) -> list[str]:
    return ["docker", "port", name, f"{port}/tcp"]


def logs(name: str) -> list[str]:
    return ["docker", "logs", name]


def remove(name: str) -> list[str]:
    """A throwaway container (scratch database, smoke run) removed with its anonymous volumes:
    an image's VOLUME (Postgres' data directory) would otherwise stay on the laptop's disk,
    about 50 MB a run. Named volumes are never removed this way."""
    return ["docker", "rm", "--force", "--volumes", name]


def tag(source: str, target: str) -> list[str]:
    return ["docker", "tag", source, target]


def push(image_ref: str) -> list[str]:
    return ["docker", "push", image_ref]


def image_digests(image_ref: str) -> list[str]:
    """`ID ["repo@digest", ...]` of a local image (on the laptop or on the VM)."""
    return ["docker", "image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", image_ref]


def parse_image_digests(output: str, image: str) -> tuple[str, str]:
    """(image id, registry digest of `image`) from `image_digests` output ('' for unknown)."""
    image_id, _, raw = output.strip().partition(" ")
    try:
        digests = json.loads(raw or "[]") or []
    except json.JSONDecodeError:
        digests = []
    found = next((d for d in digests if isinstance(d, str) and d.startswith(image + "@")), "")
    return image_id, found.split("@")[-1]


def login(registry: str, user: str) -> list[str]:
    """Registry login that reads the password from stdin, never from argv."""
    return ["docker", "login", "--username", user, "--password-stdin", registry]


SCRATCH_APP_LABEL = "deploy-toolkit.scratch.app"


def run_database(image: str, *, name: str, env: dict[str, str], port: int,
                 app: str = "") -> list[str]:
    """A throwaway database container: removed when stopped, port on 127.0.0.1 only; labelled
    with the app directory it was started for (`app`), so that `docker ps` tells whose it is."""
    argv = ["docker", "run", "--detach", "--rm", "--name", name,
            "--label", "deploy-toolkit.scratch=1", "--publish", f"127.0.0.1::{port}"]
    if app:
        argv += ["--label", f"{SCRATCH_APP_LABEL}={app}"]
    for key, value in env.items():  # no secrets here: a scratch database
        argv += ["--env", f"{key}={value}"]
    return argv + [image]


def exec_in(name: str, *command: str) -> list[str]:
    return ["docker", "exec", name, *command]


def run_probe(
    image_ref: str,
    *,
    mounts: dict[str, str],
    env: dict[str, str],
    network: str | None,
    command: list[str],
) -> list[str]:
    """Run a command in a throwaway container of the app's image, files mounted read-only
    (a mount ending in ':rw' is writable). No secrets in `env`: they would be on argv."""
    argv = ["docker", "run", "--rm"]
    if network:
        argv += ["--network", network]
    for host, container in mounts.items():
        mode = "rw" if container.endswith(":rw") else "ro"
        argv += ["--volume", f"{host}:{container.removesuffix(':rw')}:{mode}"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    return argv + [image_ref, *command]
