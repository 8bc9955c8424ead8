"""The local half: build, smoke and push an image, each step through the runner."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import yaml

from deploy.commands import docker
from deploy.core import refs
from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError, error_words
from deploy.core.runner import Runner
from deploy.core.settings import Settings
from deploy.local import dockerfile, git

SMOKED_FILE = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / (
    "deploy-toolkit/smoked.json"
)
BUILT_FILE = SMOKED_FILE.with_name("built.json")


def image_ref(settings: Settings, version: str) -> str:
    refs.validate_image(settings.require("image"))
    return docker.ref(settings.image, refs.validate_tag(version))


def require_engine(runner: Runner) -> None:
    if runner.dry_run:
        return
    result = runner.run(docker.engine_info(), check=False, quiet=True)
    if not result.ok:
        raise DeployError(
            "no Docker engine answers (`docker info` failed)",
            "start Docker (e.g. `sudo systemctl start docker`) and retry",
        )


def has_buildx(runner: Runner) -> bool:
    return runner.dry_run or runner.run(docker.buildx_version(), check=False, quiet=True).ok


def labels(settings: Settings, version: str) -> dict[str, str]:
    revision = git.head_sha(settings.root, short=False) if git.is_repo(settings.root) else ""
    return {
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.source": git.remote_url(settings.root) or str(settings.root),
    }


def build(settings: Settings, runner: Runner, version: str, quiet: bool = False) -> str:
    """Build IMAGE:VERSION into the local engine; returns the reference. With `quiet`, the
    build's output is shown only if it fails."""
    ref = image_ref(settings, version)
    dockerfile = settings.path(settings.dockerfile)
    if not dockerfile.exists():
        raise DeployError(f"no Dockerfile at {dockerfile}", "create it or set `dockerfile`")
    require_engine(runner)
    buildx = has_buildx(runner)
    if not buildx:
        runner.say("notice: docker buildx is missing; using plain `docker build`")
    runner.run(
        docker.build(
            ref,
            context=str(settings.path(settings.context)),
            dockerfile=str(dockerfile),
            platform=settings.platform,
            labels=labels(settings, version),
            buildx=buildx,
        ),
        hide=quiet,
        what=f"building {ref} failed",
        fix="read the build output above; fix the Dockerfile or the code it copies",
    )
    if not runner.dry_run:
        record_built(settings, version)
    return ref


def _built_key(settings: Settings) -> str:
    return f"{settings.root}|{settings.image}"


def _head(settings: Settings) -> str:
    try:
        return git.head_sha(settings.root, short=False) if git.is_repo(settings.root) else ""
    except DeployError:  # a repository without a commit yet
        return ""


def record_built(settings: Settings, version: str) -> None:
    """Remember the version last built for this app (and the commit it was built from)."""
    try:
        data = json.loads(BUILT_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    data[_built_key(settings)] = {"version": version, "revision": _head(settings)}
    BUILT_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = BUILT_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, BUILT_FILE)


def last_built(settings: Settings) -> str:
    """The version `inv build` last built for this app from the current commit ('' if none):
    what `inv smoke` and `inv push` take when no version is given (`inv build --version v1`
    then `inv smoke`)."""
    try:
        entry = json.loads(BUILT_FILE.read_text()).get(_built_key(settings)) or {}
    except (FileNotFoundError, json.JSONDecodeError):
        return ""
    return str(entry.get("version", "")) if entry.get("revision") == _head(settings) else ""


def local_image_id(runner: Runner, ref: str) -> str:
    result = runner.run(docker.image_id(ref), check=False, quiet=True)
    if not result.ok:
        raise DeployError(f"there is no local image {ref}", "build it first: inv build")
    return result.stdout.strip()


def _smoked() -> dict[str, dict]:
    try:
        return json.loads(SMOKED_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def record_smoked(image_id: str, ref: str) -> None:
    data = _smoked()
    data[image_id] = {"ref": ref, "at": time.time()}
    SMOKED_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = SMOKED_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, SMOKED_FILE)


def was_smoked(image_id: str) -> bool:
    return image_id in _smoked()


def smoke(settings: Settings, runner: Runner, version: str, boot: bool = False) -> str:
    """Run the smoke command inside the built image; with `boot`, start it and wait for health."""
    ref = image_ref(settings, version)
    require_engine(runner)
    with smoke_env(settings) as (env_file, source):
        if runner.dry_run:
            runner.run(docker.run_once(ref, settings.smoke_command, env_file))
            return ref
        image_id = local_image_id(runner, ref)
        result = runner.run(docker.run_once(ref, settings.smoke_command, env_file),
                            check=False, hide=True)
    if not result.ok:
        what, fix = off_path_venv(settings, *smoke_diagnosis(result.output, source))
        raise DeployError(
            f"smoke test failed in {ref} (exit {result.exited}): {what}; the container said:\n"
            + "\n".join("  " + line for line in result.output.splitlines()[-20:]),
            fix,
        )
    runner.say(f"smoke: {result.stdout.strip()[-200:] or 'ok'}")
    check_shell(settings, runner, ref)
    if boot:
        boot_check(settings, runner, ref)
    record_smoked(image_id, ref)
    return ref


def shell_users(settings: Settings) -> list[str]:
    """What runs with the image's /bin/sh on the VM: the migrate command (`sh -c` in a
    one-off container) and a compose healthcheck written as a shell command."""
    users = [f"migrate_command ({settings.migrate_command!r})"] if settings.migrate_command \
        else []
    path = settings.path(settings.compose_file)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        check = ((data.get("services") or {}).get(settings.service) or {}).get("healthcheck")
    except (OSError, yaml.YAMLError, AttributeError):
        check = None  # the compose checks report an unreadable file
    test = check.get("test") if isinstance(check, dict) else None
    if isinstance(test, str) or (isinstance(test, list) and test[:1] == ["CMD-SHELL"]):
        users.append(f"the healthcheck of service '{settings.service}' in {path.name} "
                     "(a shell command)")
    return users


def check_shell(settings: Settings, runner: Runner, ref: str) -> None:
    """Refuse an image without /bin/sh when the deploy runs something with it."""
    users = shell_users(settings)
    if not users or runner.dry_run:
        return
    result = runner.run(docker.has_shell(ref), check=False, quiet=True)
    if result.ok:
        return
    said = "\n".join("  " + line for line in result.output.strip().splitlines()[-5:])
    raise DeployError(
        f"{ref} has no usable /bin/sh (exit {result.exited}), but on the VM "
        f"{' and '.join(users)} run(s) with it: the deploy would fail there; docker said:\n"
        + said,
        "build the image on a base that has /bin/sh (not scratch or distroless), or make the "
        "healthcheck an exec form ([\"CMD\", ...]); the migration always runs with sh")


@contextlib.contextmanager
def smoke_env(settings: Settings) -> Iterator[tuple[str | None, str]]:
    """A private env file for the smoke run: `smoke_env_file`, else .env.example's values
    (parsed, written as plain KEY=value lines for `docker run --env-file`)."""
    source = settings.smoke_env_file or settings.env_example
    path = settings.path(source)
    if not path.is_file():
        if settings.smoke_env_file:
            raise DeployError(f"smoke_env_file {path} does not exist", "create it or unset it")
        yield None, ""
        return
    values = read_env_file(path)
    fd, name = tempfile.mkstemp(prefix="deploy-smoke-", suffix=".env")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{k}={v}\n" for k, v in values.items() if "\n" not in v)
        yield name, source
    finally:
        os.unlink(name)


MODULE_RE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([^']+)'")
PYDANTIC_MISSING_RE = re.compile(r"^(\w+)\n\s+Field required", re.M)
KEY_ERROR_RE = re.compile(r"KeyError: '([A-Za-z_][A-Za-z0-9_]*)'")


def smoke_diagnosis(output: str, source: str) -> tuple[str, str]:
    """What the container's own output says was missing: a module, or a setting."""
    module = MODULE_RE.findall(output)
    if module:
        return (f"the image lacks the module '{module[-1]}'",
                f"add the package that provides {module[-1]} to the app's dependencies, "
                "lock (inv lock), rebuild (inv build) and re-run inv smoke")
    fields = PYDANTIC_MISSING_RE.findall(output) + KEY_ERROR_RE.findall(output)
    if fields:
        given = f"it ran with the variables of {source}" if source else "it ran with no env"
        return (f"the app needs setting(s) {', '.join(dict.fromkeys(fields))} ({given})",
                "add them to .env.example (placeholder values), or point `smoke_env_file` at "
                "a file with the values the app needs to start")
    return ("see the container's output below",
            "fix what the output says, rebuild (inv build) and re-run inv smoke")


def off_path_venv(settings: Settings, what: str, fix: str) -> tuple[str, str]:
    """A missing module, when the smoke runs bare `python` in an image whose packages are in a
    venv off its PATH (Poetry in-project, `uv sync`): said as that, not as a missing package."""
    if not what.startswith("the image lacks the module") or not \
            settings.smoke_command.startswith("python "):
        return what, fix
    try:
        env = dockerfile.image_env(dockerfile.parse(settings.path(settings.dockerfile)))
    except DeployError:
        return what, fix
    python = env.command("python")
    if python == "python":
        return what, fix
    where = env.venv or "Poetry's environment"
    also = f" (or add `ENV PATH={env.venv}/bin:$PATH` to the Dockerfile)" if env.venv else ""
    return (f"{what} for bare `python`; the image installs the app's packages into {where}, "
            "which `python` does not see",
            f"set smoke_command = {json.dumps(python + settings.smoke_command[6:])} in "
            f"deploy.toml{also}")


def boot_check(settings: Settings, runner: Runner, ref: str) -> None:
    """Start the image with the app's env, wait for its health URL to answer 200, remove it."""
    name = f"deploy-boot-{os.getpid()}"
    env_file = settings.path(settings.env_file)
    runner.run(
        docker.run_detached(
            ref, name=name, port=settings.app_port,
            env_file=str(env_file) if env_file.exists() else None,
        ),
        hide=True,
        what=f"could not start a container from {ref}",
        fix="see the message above",
    )
    try:
        mapped = runner.run(docker.port_of(name, settings.app_port), quiet=True).stdout
        host_port = mapped.strip().splitlines()[0].rsplit(":", 1)[-1]
        url = f"http://127.0.0.1:{host_port}{settings.health_path}"
        status = wait_for_http(url, settings.boot_timeout)
        if status != 200:
            logs = runner.run(docker.logs(name), check=False, quiet=True).output
            raise DeployError(
                f"{ref} did not answer 200 on {settings.health_path} within "
                f"{settings.boot_timeout:.0f}s (last: {status}); its log ends:\n"
                + "\n".join("  " + line for line in logs.splitlines()[-15:]),
                "run the image locally with your .env and fix the start-up error",
            )
        runner.say(f"boot: {settings.health_path} answered 200")
    finally:
        runner.run(docker.remove(name), check=False, quiet=True)


def wait_for_http(url: str, timeout: float, interval: float = 0.25) -> int | str:
    """Poll `url` until it answers 200 or `timeout` passes; the last status seen."""
    deadline = time.monotonic() + timeout
    last: int | str = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                last = response.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except (urllib.error.URLError, OSError) as exc:
            last = f"no answer ({getattr(exc, 'reason', exc)})"
        except http.client.HTTPException as exc:  # something that is not HTTP answered
            last = f"no HTTP answer ({error_words(exc)})"
        if last == 200:
            return 200
        time.sleep(interval)
    return last


def login(settings: Settings, runner: Runner) -> None:
    """Log in to the image's registry when credentials are set; password on stdin only."""
    if not (settings.registry_user and settings.registry_password):
        return
    registry = docker.registry_of(settings.image)
    runner.run(
        docker.login(registry, settings.registry_user),
        stdin=settings.registry_password,
        hide=True,
        what=f"registry login to {registry or 'Docker Hub'} failed",
        fix="check registry_user and DEPLOY_REGISTRY_PASSWORD",
    )


def push(settings: Settings, runner: Runner, version: str) -> str:
    """Push IMAGE:VERSION then IMAGE:latest, only if that exact image passed smoke."""
    ref = image_ref(settings, version)
    require_engine(runner)
    if not runner.dry_run:
        image_id = local_image_id(runner, ref)
        if not was_smoked(image_id):
            raise DeployError(
                f"{ref} ({image_id[7:19]}) has not passed the smoke test",
                f"run `inv smoke --version {version}` first",
            )
    login(settings, runner)
    latest = docker.ref(settings.image, "latest")
    registry = docker.registry_of(settings.image) or "Docker Hub"
    fix = f"check that the registry {registry} is up and that you are logged in"
    runner.run(docker.push(ref), hide=True, what=f"pushing {ref} failed", fix=fix)
    runner.run(docker.tag(ref, latest))
    runner.run(docker.push(latest), hide=True, what=f"pushing {latest} failed", fix=fix)
    if runner.dry_run:
        return ""
    out = runner.run(docker.image_digests(ref), quiet=True).stdout
    digest = docker.parse_image_digests(out, settings.image)[1]
    runner.say(f"pushed {ref} {digest}")
    return f"{settings.image}@{digest}" if digest else ""
