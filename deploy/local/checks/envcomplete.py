"""env-complete: every variable the app needs is declared in .env.example and set in .env."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from deploy.core.compose import read_compose
from deploy.core.dotenvfile import dotenv_keys
from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.local.checks.result import CheckResult, failed, passed
from deploy.local.codevars import required_reads

# Variables the toolkit itself writes on the VM (image and tag of the current release).
TOOL_VARIABLES = frozenset({"DEPLOY_IMAGE", "DEPLOY_TAG"})
_BRACED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+][^}]*)?\}")
_BARE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
# One compose interpolation: ${V}, ${V:-d}, ${V-d}, ${V:?msg}, ${V?msg}, ${V:+x}, ${V+x} or $V.
_ONE = (r"\$(?:\{{(?P<{0}>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<{0}_op>:?[-?+])(?P<{0}_arg>[^}}]*))?\}}"
        r"|(?P<{0}_bare>[A-Za-z_][A-Za-z0-9_]*))")
_IMAGE_LINE = re.compile("^" + _ONE.format("repo") + ":" + _ONE.format("tag") + "$")


@dataclass(frozen=True)
class ImageLine:
    """An image line made of two compose variables, `<repo variable>:<tag variable>`."""

    repo_variable: str
    tag_variable: str
    repo_default: str = ""  # only from ${V:-d} / ${V-d}: what compose uses when V is unset
    tag_default: str = ""


def interpolate(value: str, env: dict[str, str]) -> str:
    """A compose value with its variables replaced as compose would from `env` (`${V:-d}` and
    `${V-d}` defaults; `${V?msg}` unset gives ''; `$$` is a literal $)."""
    one = re.compile(r"\$\$|" + _ONE.format("v"))

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("v") or match.group("v_bare")
        op, arg = match.group("v_op") or "", match.group("v_arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            return arg if (value is None or (op == ":-" and value == "")) else value
        if op in (":+", "+"):
            return arg if (value is not None and (op == "+" or value != "")) else ""
        return value or ""

    return one.sub(sub, value)


def parse_image_line(image: str) -> ImageLine | None:
    """The two variables of an image line in any compose interpolation form, else None."""
    match = _IMAGE_LINE.match(image.strip())
    if not match:
        return None

    def part(name: str) -> tuple[str, str]:
        if match.group(f"{name}_bare"):
            return match.group(f"{name}_bare"), ""
        op = match.group(f"{name}_op") or ""
        return match.group(name), (match.group(f"{name}_arg") or "") if "-" in op else ""

    (repo, repo_default), (tag, tag_default) = part("repo"), part("tag")
    return ImageLine(repo, tag, repo_default, tag_default)


def compose_variables(text: str) -> dict[str, bool]:
    """Variables a compose file interpolates -> whether every use gives them a default."""
    found: dict[str, bool] = {}
    for name, modifier in _BRACED.findall(text):
        has_default = bool(modifier) and modifier.lstrip(":")[0] in "-+"
        found[name] = found.get(name, True) and has_default  # one use without a default: needed
    for name in _BARE.findall(text):
        found[name] = False
    return found


def require_service(settings: Settings) -> None:
    """Refuse a `service` the compose file does not define (nothing else could deploy it)."""
    services = yaml.safe_load(read_compose(settings.path(settings.compose_file)))["services"]
    if settings.service not in services:
        raise DeployError(
            f"setting 'service' is {settings.service!r}, which {settings.compose_file} does not "
            f"define (it has: {', '.join(map(str, services)) or 'none'})",
            "set `service` in deploy.toml to the app's service in the compose file")


def tool_variables(settings: Settings) -> set[str]:
    """The compose variables the toolkit writes on the VM: the release's image and tag."""
    return set(TOOL_VARIABLES) | {settings.image_variable, settings.tag_variable}


def service_environment(settings: Settings) -> set[str]:
    """Variables the compose file sets itself in the app service's `environment:`."""
    data = yaml.safe_load(read_compose(settings.path(settings.compose_file)))
    env = (data["services"].get(settings.service) or {}).get("environment") or {}
    if isinstance(env, list):
        return {str(item).split("=", 1)[0] for item in env}
    return {str(key) for key in env}


def code_reads_missing(settings: Settings, example: set[str]) -> dict[str, str]:
    """Variables the app's code reads without a default that neither .env.example nor the
    compose service's `environment:` provides -> where the code reads them."""
    provided = {
        k.upper() for k in example | service_environment(settings) | tool_variables(settings)
    }
    return {
        var: where
        for var, where in required_reads(settings.path(settings.context)).items()
        if var.upper() not in provided
    }


def env_complete(settings: Settings) -> CheckResult:
    name = "env-complete"
    example_path = settings.path(settings.env_example)
    if not example_path.exists():
        return failed(
            name,
            f"there is no {settings.env_example}",
            f"create {settings.env_example} listing every variable the app reads",
        )
    try:
        require_service(settings)
    except DeployError as exc:
        return failed(name, exc.message, exc.fix)
    example = set(dotenv_keys(example_path))
    required = [
        var
        for var, has_default in compose_variables(
            read_compose(settings.path(settings.compose_file))
        ).items()
        if not has_default and var not in tool_variables(settings)
    ]
    missing = [v for v in required if v not in example]
    if missing:
        return failed(
            name,
            f"{settings.compose_file} uses ${{{missing[0]}}} without a default, "
            f"but {settings.env_example} lacks it"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            f"add {', '.join(missing)} to {settings.env_example}",
        )
    unread = code_reads_missing(settings, example)
    if unread:
        shown = ", ".join(f"{var} ({where})" for var, where in list(unread.items())[:3])
        return failed(
            name,
            f"the app's code reads {shown} without a default"
            + (f" (and {len(unread) - 3} more)" if len(unread) > 3 else "")
            + f", missing from {settings.env_example}",
            f"add {', '.join(unread)} to {settings.env_example} (with a placeholder value)",
        )
    env_path = settings.path(settings.env_file)
    if not env_path.exists():
        return passed(
            name, f"{settings.env_example} covers the compose file; no {settings.env_file} here"
        )
    env = set(dotenv_keys(env_path))
    undeclared = sorted(k for k in env - example if not k.startswith("DEPLOY_"))
    if undeclared:
        return failed(
            name,
            f"{settings.env_file} sets {', '.join(undeclared)}, "
            f"missing from {settings.env_example}",
            f"add {', '.join(undeclared)} to {settings.env_example} (with a placeholder value)",
        )
    unset = sorted(example - env)
    if unset:
        return failed(
            name,
            f"{settings.env_example} declares {', '.join(unset)}, missing from {settings.env_file}",
            f"set {', '.join(unset)} in {settings.env_file}",
        )
    return passed(name, f"{len(example)} variables, declared and set")
