"""Housekeeping on one VM: old images and stopped containers removed after a deploy (and by
`fab prune`), free disk checked before a pull and a backup, and the app removed (`fab remove`).

Each VM query is a command of `deploy.commands.vm` and a parser here (the parsers are tested on
captured output); what goes and what stays is decided here, from the release history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploy.commands import proxy as pcmd
from deploy.commands import vm as cmd
from deploy.core import registry
from deploy.core.errors import DeployError
from deploy.vm.vm import VmQueries

MB = 1024 * 1024
DF_LINE = re.compile(r"^.*?\s+\d+\s+\d+\s+(?P<available>\d+)\s+(?:\d+%|-)\s+(?P<mount>/.*)$")


@dataclass(frozen=True)
class LocalImage:
    """An image in the VM's engine: its id, unpacked size and references (tags, digests)."""

    id: str
    size: int
    refs: tuple[str, ...]


def parse_app_images(output: str) -> tuple[list[LocalImage], set[str]]:
    """The images and the ids of images containers use, from `app_images`' output."""
    images: list[LocalImage] = []
    used: set[str] = set()
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "image" and words[2].isdigit():
            images.append(LocalImage(words[1], int(words[2]), tuple(words[3:])))
        elif len(words) == 2 and words[0] == "used":
            used.add(words[1])
    return images, used


def kept_releases(history: list[dict], keep: int) -> list[dict]:
    """The newest `keep` releases of the history, newest first, each image counted once
    (a rollback to v1 and the deploy of v1 are one release of the same image)."""
    kept: list[dict] = []
    seen: set[str] = set()
    if keep < 1:
        return kept
    for entry in reversed(history):
        key = entry.get("digest") or entry.get("tag", "")
        if key in seen:
            continue
        seen.add(key)
        kept.append(entry)
        if len(kept) == keep:
            break
    return kept


def release_refs(image: str, entries: list[dict]) -> set[str]:
    """The references (IMAGE:TAG, IMAGE@DIGEST) of the releases `entries` recorded."""
    refs = {f"{image}:{e['tag']}" for e in entries if e.get("tag")}
    return refs | {f"{image}@{e['digest']}" for e in entries if e.get("digest")}


def images_to_prune(images: list[LocalImage], used: set[str], history: list[dict], keep: int,
                    image: str) -> list[LocalImage]:
    """The app's images that go: those of releases in its history older than the newest
    `keep` (by tag or digest), unless one of the kept releases names them too or a container
    (of any app) uses them. Images the history never named (pulled by hand, another app's)
    stay."""
    keeping = release_refs(image, kept_releases(history, keep))
    ours = release_refs(image, history)
    return [i for i in images if i.id not in used and not keeping & set(i.refs)
            and ours & set(i.refs)]


def own_refs(image: str, found: LocalImage) -> list[str]:
    """The references of `found` in the repository `image` (others are another app's)."""
    return [r for r in found.refs if r.startswith((f"{image}:", f"{image}@"))]


def human(size: int) -> str:
    """A size in bytes as people read it (1.5 GB, 230 MB, 12 kB; 1024 to the next)."""
    for unit, factor in (("TB", 1024 ** 4), ("GB", 1024 ** 3), ("MB", MB), ("kB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{size} B"


# -- free disk --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Free:
    """What `df -Pk` says of one filesystem: bytes available and where it is mounted."""

    available: int
    mount: str


def parse_df(output: str) -> Free | None:
    """The available bytes and mount point from POSIX `df -Pk` output (None if unreadable)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Filesystem"):
        return None
    # Filesystem 1024-blocks Used Available Capacity Mounted-on (names may hold spaces)
    found = DF_LINE.match(lines[-1])
    return Free(int(found["available"]) * 1024, found["mount"]) if found else None


def free_space(vm: VmQueries, where: str) -> Free | None:
    result = vm.run(cmd.disk_free(where), quiet=True, check=False)
    return parse_df(result.stdout) if result.ok else None


def require_space(vm: VmQueries, free: Free, label: str, needed: int, why: str,
                  doing: str) -> None:
    """Refuse, with the figures, when `free` (of the place `label` names) is less than `needed`
    plus disk_headroom_mb. `why` says what the figure is, `doing` the step."""
    headroom = vm.settings.disk_headroom_mb * MB
    if free.available >= needed + headroom:
        return
    raise DeployError(
        f"not enough free disk on {vm.runner.where} to {doing}: {human(free.available)} free "
        f"on {free.mount} ({label}), {human(needed + headroom)} needed ({human(needed)}, "
        f"{why}, plus disk_headroom_mb {vm.settings.disk_headroom_mb} MB); nothing was changed",
        "free disk space on the VM (`fab prune` removes the app's old images and stopped "
        "containers; `docker system df` on the VM shows what uses it), then run it again")


def check_pull_space(vm: VmQueries, tag: str, digest: str = "") -> None:
    """Before a pull: the engine's data root has room for the image (its size in the
    registry, or the previous release's image on the VM, whichever is larger), unless it is
    on the VM already."""
    if vm.runner.dry_run:
        if vm.facts is None:  # else the facts command, shown, asked it
            vm.run(cmd.disk_free("docker"))
        return

    s = vm.settings
    facts = vm.facts
    images_out: str | None
    if facts is not None and facts.docker_df is not None and facts.app_images is not None:
        # what the check phase read a moment ago; once: a later pull asks the VM again
        df_out, images_out = facts.docker_df, facts.app_images
        facts.docker_df = facts.app_images = None
        free = parse_df(df_out)
    else:
        free = free_space(vm, "docker")
        images_out = None
    vm.images_before_pull = images_out  # what the prune after this pull may read
    if free is None:  # df unreadable: the pull's own error says what happens
        return
    if images_out is None:
        images_out = vm.images_before_pull = vm.run(cmd.app_images(vm.image), quiet=True,
                                                    check=False).stdout
    images, _ = parse_app_images(images_out)
    wanted = f"{vm.image}@{digest}" if digest else vm.ref(tag)
    if any(wanted in i.refs for i in images):
        return
    figures: list[tuple[int, str]] = []
    size = registry.image_size(vm.image, digest or tag, s.registry_user, s.registry_password,
                               s.platform)
    if size is not None:
        figures.append((size, "the image's compressed size in the registry"))
    previous = vm.current_tag()
    before = next((i for i in images if previous and vm.ref(previous) in i.refs), None)
    if before is not None:
        figures.append((before.size, f"the size of the previous release's image ({previous})"))
    if not figures:
        vm.runner.say(f"note: the size of {wanted} is unknown (the registry does not say and "
                      "no release's image is on the VM): free disk not checked before the pull")
        return
    needed, why = max(figures)
    require_space(vm, free, "Docker's data root", needed, why, f"pull {wanted}")


def database_size(vm: VmQueries, tag: str) -> int | None:
    """The bytes of the app's database as it is now (None if unknown); Postgres asked
    through the compose file with release `tag`."""
    s = vm.settings
    if s.database == "sqlite":
        argv = cmd.file_size(s.sqlite_path, f"{s.sqlite_path}-wal")
    elif s.database == "postgres":
        argv = cmd.postgres_size(vm.compose(tag), s.postgres_service, s.postgres_user,
                                 s.postgres_db)
    else:
        return None
    out = vm.run(argv, quiet=True, check=False)
    text = out.stdout.strip().splitlines()[-1:] if out.ok else []
    return int(text[0]) if text and text[0].strip().isdigit() else None


def check_backup_space(vm: VmQueries, tag: str) -> None:
    """Before a backup: backups/ has room for the database (its size now; a pg_dump archive
    is smaller, a copy of an SQLite file as large)."""
    if vm.runner.dry_run:
        vm.run(cmd.disk_free(cmd.BACKUP_DIR))
        return
    free = free_space(vm, cmd.BACKUP_DIR)
    size = database_size(vm, tag) if free else None
    if free is None or not size:  # unknown, or nothing to back up: the backup's error says
        return
    require_space(vm, free, f"{vm.settings.app_dir}/{cmd.BACKUP_DIR}", size,
                  "the database's size", "back up the database")


# -- pruning ----------------------------------------------------------------------------------
def prune(vm: VmQueries) -> str:
    """Remove the app's stopped containers, then its images no release of the newest
    keep_releases uses. What was removed, in a few words; a DeployError if a step failed."""
    if vm.runner.dry_run:
        vm.run(cmd.prune_containers(vm.project))
        vm.run(cmd.app_images(vm.image))
        return ""
    gone = vm.run(cmd.prune_containers(vm.project), quiet=True,
                  what="removing the app's stopped containers failed",
                  fix="see the error above; `fab prune` tries again").stdout.split()
    doomed = remove_images(vm, vm.history(), vm.settings.keep_releases)
    said = []
    if doomed:
        said.append(f"{len(doomed)} image{'s' * (len(doomed) > 1)} "
                    f"({human(sum(i.size for i in doomed))})")
    if gone:
        said.append(f"{len(gone)} stopped container{'s' * (len(gone) > 1)}")
    return ", ".join(said) or "nothing to remove"


def nothing_to_prune(vm: VmQueries, history: list[dict], keep: int) -> bool:
    """Whether the images this command saw before its pull, the pulled tag's reference taken
    off them (it names the pulled image now), prove that no image could go: none would,
    even if no container used it. Read once."""
    before, vm.images_before_pull = vm.images_before_pull, None
    if before is None:
        return False
    images, _ = parse_app_images(before)
    moved = {vm.ref(tag) for tag in vm.pulled}
    images = [LocalImage(i.id, i.size, tuple(r for r in i.refs if r not in moved))
              for i in images]
    return not images_to_prune(images, set(), history, keep, vm.image)


def remove_images(vm: VmQueries, history: list[dict], keep: int) -> list[LocalImage]:
    """Remove the app's images no release of the newest `keep` uses (and no container);
    the images removed."""
    if nothing_to_prune(vm, history, keep):
        return []
    images, used = parse_app_images(vm.run(cmd.app_images(vm.image), quiet=True,
                                           what="listing the app's images failed",
                                           fix="see the error above").stdout)
    doomed = images_to_prune(images, used, history, keep, vm.image)
    refs = [r for i in doomed for r in own_refs(vm.image, i)]
    if refs:
        vm.run(cmd.remove_images(refs), quiet=True, what="removing the app's old images failed",
               fix="see the error above; `fab prune` tries again")
    return doomed


# -- removing the app -------------------------------------------------------------------------
def kept_without_data(vm: VmQueries) -> list[str]:
    """What `fab remove` leaves in app_dir without --data: the backups and the SQLite file."""
    s = vm.settings
    return [cmd.BACKUP_DIR, *([s.sqlite_path] if s.database == "sqlite" else [])]


def route_exists(vm: VmQueries) -> bool:
    """Whether the VM's proxy has a route for this app (whatever `proxy` says now)."""
    path = f"{vm.settings.proxy_dir}/{pcmd.ROUTES_DIR}/{vm.project}.json"
    return vm.run(["test", "-f", path], quiet=True, check=False, cwd="").ok


def remove(vm: VmQueries, data: bool) -> list[str]:
    """Remove the app from the VM under the deploy lock: its proxy route, containers,
    networks, images and files in app_dir; with `data` its volumes, database file and
    backups too. What was removed and kept, one item a line."""
    s = vm.settings
    said: list[str] = []
    with vm.locked(vm.current_tag() or "the app", action="remove"):
        history = vm.history()
        if not vm.runner.dry_run and route_exists(vm):
            vm.run(pcmd.remove_app(s.proxy_dir, vm.project), cwd="", hide=True,
                   what="could not remove the app's route from the proxy; nothing was removed",
                   fix="look at `fab proxy logs`, then run `fab remove` again")
            said.append(f"route {vm.project} (proxy in {s.proxy_dir})")
        out = vm.run(cmd.remove_app(s.app_dir, data, vm.project,
                                    [] if data else kept_without_data(vm)),
                     quiet=True, what=f"removing the app from {s.app_dir} failed part way",
                     fix="see the error above; `fab remove` again removes what is left")
        said += out.stdout.splitlines()
        if not vm.runner.dry_run:
            said += [f"image {' '.join(own_refs(vm.image, i))}"
                     for i in remove_images(vm, history, 0)]
    state = vm.run(cmd.remove_state(s.app_dir), quiet=True, check=False)
    if not state.ok:
        vm.runner.say(f"warning: {state.output.strip()}")
    said += state.stdout.splitlines()
    return said
