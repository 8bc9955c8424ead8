"""Just enough Dockerfile reading for the preflight: stages, ARG defaults, RUN lines."""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from deploy.core.errors import DeployError

PYTHON_IMAGE_RE = re.compile(r"^(?:[^/\s]+/)*python:(?P<major>\d+)\.(?P<minor>\d+)")


@dataclass
class Stage:
    image: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    stages: list[Stage]
    args: dict[str, str]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def logical_lines(text: str) -> list[str]:
    """Instructions with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def substitute(value: str, args: dict[str, str]) -> str:
    """Expand ${NAME}, ${NAME:-default} and $NAME from the global ARG defaults."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", lambda m: _sub(m, args), value)


def _sub(match: re.Match[str], args: dict[str, str]) -> str:
    if match.group(3):
        return args.get(match.group(3), "")
    return args.get(match.group(1)) or (match.group(2) or "")


def parse(path: Path) -> Dockerfile:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DeployError(
            f"no Dockerfile at {path}", "create one, or set `dockerfile` in deploy.toml"
        ) from None
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "ARG":
            name, _, default = rest.partition("=")
            if not stages:  # global ARGs are the ones FROM can use
                args[name.strip()] = default.strip().strip("\"'")
        elif word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            if not parts:
                raise DeployError(f"{path.name}: a FROM line names no image", f"fix {path}")
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else ""
            stages.append(Stage(image=substitute(parts[0], args), name=name))
        elif stages:
            stages[-1].instructions.append((word, rest))
    if not stages:
        raise DeployError(f"{path.name} has no FROM line", f"start {path} with FROM python:X.Y")
    return Dockerfile(path=path, stages=stages, args=args)


def final_python(dockerfile: Dockerfile) -> str:
    """The major.minor Python of the final stage's base image, following stage aliases."""
    by_name = {s.name.lower(): s for s in dockerfile.stages if s.name}
    image, seen = dockerfile.final.image, set()
    while image.lower() in by_name and image.lower() not in seen:
        seen.add(image.lower())
        image = by_name[image.lower()].image
    match = PYTHON_IMAGE_RE.match(image)
    if not match:
        raise DeployError(
            f"cannot read a Python version from the final stage's `FROM {image}`",
            "base the final stage on an official-style image such as python:3.11-slim "
            "(or ARG PYTHON_VERSION=3.11 with FROM python:${PYTHON_VERSION}-slim)",
        )
    return f"{match.group('major')}.{match.group('minor')}"


def run_lines(dockerfile: Dockerfile) -> list[str]:
    return [
        rest for stage in dockerfile.stages for word, rest in stage.instructions if word == "RUN"
    ]


def mentions(dockerfile: Dockerfile, filename: str) -> bool:
    return any(
        filename in rest for stage in dockerfile.stages for _, rest in stage.instructions
    )


def stage_chain(dockerfile: Dockerfile) -> list[Stage]:
    """The final stage and the stages it is built FROM (by alias), base first."""
    by_name = {s.name.lower(): s for s in dockerfile.stages if s.name}
    chain, stage = [dockerfile.final], dockerfile.final
    while stage.image.lower() in by_name and by_name[stage.image.lower()] not in chain:
        stage = by_name[stage.image.lower()]
        chain.insert(0, stage)
    return chain


def final_instruction(dockerfile: Dockerfile, word: str) -> str | None:
    """The last `word` (CMD, ENTRYPOINT, WORKDIR...) that applies to the final image."""
    found = None
    for stage in stage_chain(dockerfile):
        for instr, rest in stage.instructions:
            if instr == word:
                found = rest
    return found


@dataclass(frozen=True)
class ImageEnv:
    """Where the image's own environment puts the app's packages: a venv (its path, and
    whether its bin/ is on the image's PATH), or Poetry's own env (`poetry run`)."""

    venv: str = ""
    on_path: bool = True
    poetry_run: bool = False

    def command(self, program: str) -> str:
        """`program` (python, alembic) as the image must start it to see the app's packages."""
        if self.poetry_run:
            return f"poetry run {program}"
        if self.venv and not self.on_path:
            return f"{self.venv.rstrip('/')}/bin/{program}"
        return program

    def shell_prefix(self) -> str:
        """A prefix for a shell command line (migrate_command runs under `sh -c`)."""
        if self.poetry_run:
            return "poetry run "
        if self.venv and not self.on_path:
            return f"PATH={self.venv.rstrip('/')}/bin:$PATH "
        return ""


VENV_RUN_RE = re.compile(r"(?:\bpython[\d.]*\s+-m\s+venv|\bvirtualenv\b(?![.-])|\buv\s+venv)"
                         r"(?:\s+-{1,2}[\w-]+(?:=\S+)?)*(?:\s+(?P<path>[^\s;&|-][^\s;&|]*))?")
TRUE_WORDS = ("1", "true", "yes", "on")


def env_pairs(rest: str) -> dict[str, str]:
    """The variables of an ENV instruction (`K=V K2="v w"`, or the old `K value` form)."""
    try:
        words = shlex.split(rest)
    except ValueError:
        return {}
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words if "=" in w)


def _join(workdir: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(workdir, path))


def image_env(dockerfile: Dockerfile) -> ImageEnv:
    """The final image's own environment, from its stages' ENV, WORKDIR, RUN and COPY lines:
    Poetry in-project (`virtualenvs.in-project true`), `uv sync` (.venv or
    UV_PROJECT_ENVIRONMENT), `python -m venv`/`uv venv`, a venv copied from a build stage, and
    VIRTUAL_ENV; then whether PATH holds its bin/."""
    env: dict[str, str] = {}
    workdir, venv, poetry_run = "/", "", False
    poetry_config: dict[str, bool] = {}  # `poetry config virtualenvs.X true|false` so far
    for stage in stage_chain(dockerfile):
        for word, rest in stage.instructions:
            if word == "ENV":
                for key, value in env_pairs(rest).items():
                    env[key] = substitute(value, env)
            elif word == "WORKDIR":
                workdir = _join(workdir, substitute(rest.strip().strip("\"'"), env))
            elif word == "COPY" and "--from" in rest:
                words = [w for w in rest.split() if not w.startswith("--")]
                if len(words) >= 2 and words[0].rstrip("/").endswith(("/.venv", "/venv")):
                    venv = _join(workdir, substitute(words[-1], env))
            elif word == "RUN":
                run = substitute(rest, env)
                for key, value in re.findall(r"virtualenvs\.(in-project|create)\s+(\w+)", run):
                    poetry_config[key] = value.lower() in TRUE_WORDS
                if re.search(r"\bpoetry\b[^;&|]*\binstall\b", run):
                    in_project = poetry_config.get("in-project", env.get(
                        "POETRY_VIRTUALENVS_IN_PROJECT", "").lower() in TRUE_WORDS)
                    no_venv = not poetry_config.get("create", env.get(
                        "POETRY_VIRTUALENVS_CREATE", "true").lower() in TRUE_WORDS)
                    if in_project and not no_venv:
                        venv, poetry_run = _join(workdir, ".venv"), False
                    elif not no_venv:
                        venv, poetry_run = "", True
                if re.search(r"\buv\s+sync\b", run):
                    venv = _join(workdir, env.get("UV_PROJECT_ENVIRONMENT") or ".venv")
                match = VENV_RUN_RE.search(run)
                if match:
                    venv = _join(workdir, match.group("path") or ".venv")
    venv = venv or env.get("VIRTUAL_ENV", "")
    path = env.get("PATH", "").split(":")
    on_path = not venv or any(p.rstrip("/") == f"{venv.rstrip('/')}/bin" for p in path)
    return ImageEnv(venv=venv, on_path=on_path, poetry_run=poetry_run)
