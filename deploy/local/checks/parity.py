"""python-parity and lock-fresh: the image runs what the laptop ran and what the lock pins."""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from deploy.core.settings import Settings
from deploy.local import apppython, dockerfile, pins
from deploy.local.checks.result import CheckResult, failed, passed
from deploy.local.lockkinds import detect, installs_from_lock


def python_versions(settings: Settings) -> dict[str, str]:
    """Every place that names the app's Python, mapped to the major.minor it names: the image
    first, then the app's development Python (never the interpreter running this tool)."""
    found: dict[str, str] = {}
    parsed = dockerfile.parse(settings.path(settings.dockerfile))
    found[f"{settings.dockerfile} (final stage)"] = dockerfile.final_python(parsed)
    # What the app declares, never a venv's Python: the tool may have created that venv.
    found.update(apppython.dev_pythons(settings, venv=False))
    lock_path = settings.path(settings.lock_file)
    if pins.lock_kind(settings) == "requirements" and lock_path.exists():
        locked = pins.lock_python(lock_path.read_text())
        if locked:
            found[f"{settings.lock_file} header"] = locked
    return found


def python_parity(settings: Settings) -> CheckResult:
    name = "python-parity"
    found = python_versions(settings)
    image_py = next(iter(found.values()))
    differing = {where: v for where, v in found.items() if v != image_py}
    if differing:
        where, version = next(iter(differing.items()))
        return failed(
            name,
            f"the image runs Python {image_py} but the {where} is {version}",
            f"use Python {image_py} for the {where} (or change the Dockerfile's FROM); "
            "then re-run `inv lock`",
            detail=", ".join(f"{w}={v}" for w, v in found.items()),
        )
    spec = apppython.requires_python(settings)
    if spec:
        try:
            ok = SpecifierSet(spec).contains(f"{image_py}.0")
        except InvalidSpecifier:
            return failed(name, f"pyproject requires-python {spec!r} does not parse", "fix it")
        if not ok:
            return failed(
                name,
                f"the image runs Python {image_py} but pyproject requires-python is {spec!r}",
                "align requires-python with the Dockerfile's FROM",
            )
        lowest = lowest_python(SpecifierSet(spec))
        if len(found) == 1 and lowest and lowest != image_py:
            declared = apppython.python_declaration(settings)
            label = declared[0] if declared else f"requires-python {spec!r}"
            return failed(
                name,
                f"the image runs Python {image_py} but the app declares only {label}, whose "
                f"lowest Python is {lowest}: nothing says the app runs on {image_py}",
                f"use python:{lowest} in the Dockerfile's FROM, or declare the Python the app "
                f"is developed and tested on: a .python-version file with {image_py} (and "
                "develop on it)",
            )
        found[f"requires-python {spec}"] = image_py
    if len(found) == 1:
        return passed(name, f"the image runs Python {image_py}; the app names no development "
                            "Python (.python-version, a venv, requires-python) to compare")
    return passed(name, f"Python {image_py}: image and app agree ({', '.join(list(found)[1:])})")


def lock_fresh(settings: Settings) -> CheckResult:
    name = "lock-fresh"
    state = pins.check_lock(settings)
    if not state.fresh:
        return failed(name, state.reason, state.fix)
    kind = pins.lock_kind(settings)
    if kind != "requirements":
        lock_name = detect(settings).lock.name
        parsed = dockerfile.parse(settings.path(settings.dockerfile))
        ok, reason, fix = installs_from_lock(kind, dockerfile.run_lines(parsed), lock_name)
        if not ok:
            return failed(name, reason, fix)
        return passed(name, f"{lock_name} is up to date ({kind}); the image installs from it")
    parsed = dockerfile.parse(settings.path(settings.dockerfile))
    req_name = settings.path(settings.requirements).name
    lock_name = settings.path(settings.lock_file).name
    for line in dockerfile.run_lines(parsed):
        words = [w.rsplit("/", 1)[-1] for w in line.split()]
        if "install" in words and req_name in words:
            return failed(
                name,
                f"the Dockerfile installs from {req_name}, not from the lock",
                f"install with `pip install --require-hashes -r {lock_name}`",
            )
    if not dockerfile.mentions(parsed, lock_name):
        return failed(
            name,
            f"the Dockerfile never uses {lock_name}",
            f"COPY {lock_name} and `pip install --require-hashes -r {lock_name}`",
        )
    return passed(name, f"{lock_name} matches {req_name}; the image installs from it")


def lowest_python(spec: SpecifierSet) -> str | None:
    """The lowest 3.x minor a specifier admits (None if it admits none up to 3.29)."""
    for minor in range(30):
        if any(spec.contains(f"3.{minor}.{micro}") for micro in (0, 99)):
            return f"3.{minor}"
    return None
