"""Where the app runs, as opposed to where the tool runs.

The tool may run on any supported Python (a uv tool, a pipx app, or the app's own venv); what
imports the app (the Alembic probe, the tests) runs in the app's environment, found in this
order: the `app_python` setting; a `.venv`/`venv` next to the app (from its Alembic directory
up to the project root); `uv run --locked` for a uv project; `poetry run` for a Poetry project;
else the app's freshly built image. The app's development Python is read from the same places.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from deploy.core.errors import DeployError
from deploy.core.settings import Settings
from deploy.local import dockerfile

VENV_DIRS = (".venv", "venv")
POETRY_SPEC = "poetry>=2,<3"
IMAGE = "image"
# Variables of the tool's own environment that must not leak into the app's interpreter.
TOOL_ONLY_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "CONDA_PREFIX")


@dataclass(frozen=True)
class AppPython:
    """How to start the app's Python: an argv prefix (empty for `image`) and where it is."""

    kind: str  # "setting", "venv", "uv", "poetry" or "image"
    argv: tuple[str, ...]
    where: str

    @property
    def in_image(self) -> bool:
        return self.kind == IMAGE


def upward(start: Path, stop: Path) -> list[Path]:
    """`start` and its parents up to `stop` (inclusive), or just `start` if it is outside."""
    start, stop = start.resolve(), stop.resolve()
    dirs = [start]
    if start != stop and stop not in start.parents:
        return dirs
    while dirs[-1] != stop:
        dirs.append(dirs[-1].parent)
    return dirs


def app_dirs(settings: Settings) -> list[Path]:
    """Where the app's own files may be, innermost first: its Alembic dir, the build context,
    up to the project root."""
    seen: list[Path] = []
    for start in (settings.path(settings.alembic_ini).parent, settings.path(settings.context)):
        for d in upward(start, settings.root):
            if d not in seen:
                seen.append(d)
    return seen


def find_upward(settings: Settings, name: str) -> Path | None:
    for d in app_dirs(settings):
        if (d / name).exists():
            return d / name
    return None


def tool_path(name: str) -> str | None:
    """A tool on PATH, else next to this interpreter (a venv that is not activated)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def poetry() -> list[str]:
    """Poetry's command: on PATH, else run through uvx (the app's tests, locks and runs)."""
    path = tool_path("poetry")
    if path:
        return [path]
    uvx = tool_path("uvx")
    if not uvx:
        raise DeployError("this app locks with Poetry (poetry.lock) but neither poetry nor "
                          "uvx is installed", "pip install poetry (or pip install uv)")
    return [uvx, "--from", POETRY_SPEC, "poetry"]


def venv_python(settings: Settings) -> Path | None:
    for d in app_dirs(settings):
        for name in VENV_DIRS:
            python = d / name / "bin" / "python"
            if python.exists():
                return python
    return None


def app_python(settings: Settings) -> AppPython:
    """The app's interpreter (see the module docstring for the order)."""
    if settings.app_python == IMAGE:
        return AppPython(IMAGE, (), "the app's image")
    if settings.app_python:
        argv = shlex.split(settings.app_python)
        if "/" in argv[0]:
            argv[0] = str(settings.path(argv[0]))
        return AppPython("setting", tuple(argv), f"app_python = {settings.app_python!r}")
    venv = venv_python(settings)
    if venv:
        return AppPython("venv", (str(venv),), str(venv.parent.parent.relative_to(settings.root)
                                                    if settings.root in venv.parents else venv))
    uv_lock = find_upward(settings, "uv.lock")
    if uv_lock:
        uv = tool_path("uv")
        if not uv:
            raise DeployError("the app is a uv project (uv.lock) but uv is not installed",
                              "install uv (pip install uv), or set `app_python` in deploy.toml")
        # uv creates the project's .venv on first use: for the image's Python, not whichever
        # Python uv would pick on this machine.
        image_py = image_python(settings)
        pin = ("--python", image_py) if image_py else ()
        return AppPython("uv", (uv, "run", "--locked", *pin, "--project", str(uv_lock.parent),
                                "python"), "uv run")
    poetry_lock = find_upward(settings, "poetry.lock")
    if poetry_lock:
        return AppPython("poetry", (*poetry(), "--directory", str(poetry_lock.parent), "run",
                                    "python"), "poetry run")
    return AppPython(IMAGE, (), "the app's image (no venv, uv.lock or poetry.lock found)")


def image_python(settings: Settings) -> str | None:
    """The major.minor Python of the app's image (None if the Dockerfile does not say)."""
    try:
        return dockerfile.final_python(dockerfile.parse(settings.path(settings.dockerfile)))
    except DeployError:
        return None


def prepare(settings: Settings, app: AppPython) -> None:
    """Before the tool first runs the app's code through Poetry: when the project has no
    environment yet, create it for the image's Python (`poetry env use`), never for whichever
    Python Poetry would pick; without that Python here, say which one to install."""
    if app.kind != "poetry":
        return
    project = app.argv[app.argv.index("--directory") + 1]
    base = list(app.argv[: app.argv.index("--directory")])
    info = subprocess.run([*base, "env", "info", "--path", "--directory", project],
                          capture_output=True, text=True, env=app_environ(), check=False)
    if info.returncode == 0 and info.stdout.strip():
        return
    version = image_python(settings)
    if not version:
        return
    python = shutil.which(f"python{version}")
    if not python:
        raise DeployError(
            f"the app's Poetry project has no environment yet, and Python {version} (the "
            "image's) is not on PATH to create it with",
            f"install Python {version} (e.g. `pyenv install {version}`, or your system's "
            f"python{version} package), then `poetry env use {version}` in {project}")
    use = subprocess.run([*base, "env", "use", python, "--directory", project],
                         capture_output=True, text=True, env=app_environ(), check=False)
    if use.returncode != 0:
        raise DeployError(f"`poetry env use {python}` failed:\n{use.stdout}{use.stderr}",
                          f"create the environment by hand: poetry env use {version}")


def app_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the app's interpreter: ours without the tool's venv."""
    env = {k: v for k, v in os.environ.items() if k not in TOOL_ONLY_ENV}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the app's tree (git-clean)
    env.update(extra or {})
    return env


def _major_minor(text: str) -> str | None:
    match = re.match(r"\s*(?:cpython-|python)?(\d+)\.(\d+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def venv_version(venv_python_path: Path) -> str | None:
    """A venv's Python major.minor, from its pyvenv.cfg (no need to run it)."""
    cfg = venv_python_path.parent.parent / "pyvenv.cfg"
    try:
        text = cfg.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return _major_minor(value)
    return None


def pyproject(settings: Settings) -> tuple[Path, dict] | None:
    """The app's pyproject.toml (innermost) and its data."""
    path = find_upward(settings, "pyproject.toml")
    if not path:
        return None
    try:
        return path, tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError):
        return None


def requires_python(settings: Settings) -> str | None:
    declared = python_declaration(settings)
    return declared[1] if declared else None


def python_declaration(settings: Settings) -> tuple[str, str] | None:
    """Where pyproject.toml declares the app's Python range, and the range (PEP 440):
    `requires-python`, else Poetry's `python =` dependency."""
    found = pyproject(settings)
    if not found:
        return None
    data = found[1]
    spec = data.get("project", {}).get("requires-python")
    if spec:
        return "requires-python", spec
    poetry_py = data.get("tool", {}).get("poetry", {}).get("dependencies", {}).get("python")
    if isinstance(poetry_py, str):
        return f"Poetry's python = {poetry_py!r}", poetry_to_pep440(poetry_py)
    return None


def poetry_to_pep440(spec: str) -> str:
    """Poetry's `^3.10` / `~3.10` / `>=3.10,<3.13` as a PEP 440 specifier."""
    parts = []
    for part in spec.split(","):
        part = part.strip()
        match = re.match(r"^([\^~])(\d+)\.(\d+)", part)
        if match:
            major, minor = int(match.group(2)), int(match.group(3))
            upper = f"{major + 1}.0" if match.group(1) == "^" else f"{major}.{minor + 1}"
            parts += [f">={major}.{minor}", f"<{upper}"]
        else:
            parts.append(part)
    return ",".join(parts)


def dev_pythons(settings: Settings, venv: bool = True) -> dict[str, str]:
    """Every place that names the app's development Python -> its major.minor (without the
    venv's when `venv` is false: the tool may have created it)."""
    found: dict[str, str] = {}
    for d in app_dirs(settings):
        pin = d / ".python-version"
        if pin.exists():
            version = _major_minor((pin.read_text().split() or [""])[0])
            if version:
                found[str(pin.relative_to(settings.root))] = version
            break
    venv_path = venv_python(settings) if venv else None
    if venv_path:
        version = venv_version(venv_path)
        if version:
            found[f"the app's venv ({venv_path.parent.parent.relative_to(settings.root)})"] = \
                version
    return found


def alembic_script_dir(ini: Path) -> Path | None:
    """The Alembic script_location of an alembic.ini (where env.py lives)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini)
        location = parser.get("alembic", "script_location")
    except (configparser.Error, OSError):
        return None
    location = location.replace("%(here)s", str(ini.parent))
    if ":" in location and not location.startswith("/"):  # package:resource
        return None
    path = Path(location)
    return path if path.is_absolute() else ini.parent / path
