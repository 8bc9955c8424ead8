"""Just enough Dockerfile reading for the preflight: stages, ARG defaults, RUN lines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from deploy.errors import DeployError

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
