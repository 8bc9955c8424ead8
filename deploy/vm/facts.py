"""What a release's checks need to know of the VM, asked in one round trip.

The helper's `facts` subcommand (deploy.commands.vm.facts) prints one document: sections, each
a line `@@fact NAME` then its lines, `@@fact end` last. `parse_facts` reads it; the Vm keeps
what it read for the rest of the deploy (deploy.vm.vm.VmQueries.gather_facts), so no
command is sent twice for the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deploy.core.errors import DeployError

MARK = "@@fact "
OUTPUT = "output"  # release-files: a command's output follows this section line


@dataclass
class Facts:
    """The VM as the check phase saw it (under the deploy lock)."""

    env_keys: list[str] = field(default_factory=list)  # app.env's keys, never its values
    release_tag: str = ""  # the tag in .deploy/release.env
    dotenv_tag: str = ""  # the tag in .env
    compose: str = ""  # v2, v1, or none (neither works)
    project_dirs: list[str] = field(default_factory=list)  # of the project's containers
    dir_projects: list[str] = field(default_factory=list)  # projects made in app_dir
    oneoffs: list[str] = field(default_factory=list)  # the project's one-off containers
    http_tool: str = ""  # curl, wget, python3, or '' (none)
    history: list[str] = field(default_factory=list)  # .deploy/history.jsonl's lines
    # for the pull's disk check, read once (None: not asked, or read already)
    docker_df: str | None = None  # `df -Pk` of Docker's data root
    app_images: str | None = None  # the repository's images and the images containers use


def sections(text: str) -> dict[str, list[str]]:
    """`@@fact NAME` sections -> {NAME: lines}; lines before the first section under ''."""
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        if line.startswith(MARK):
            current = line[len(MARK):].strip()
            found.setdefault(current, [])
        else:
            found[current].append(line)
    return found


def parse_facts(text: str) -> Facts:
    """The helper's `facts` document; DeployError if it was cut off (no `end` section)."""
    found = sections(text)
    if "end" not in found:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise DeployError("the VM's answer to the deploy's checks was cut off"
                          + (f":\n{tail}" if tail else " (it printed nothing)"),
                          "run the same command again; if it fails again, look at the VM "
                          "(disk space, `docker ps`)")

    def words(name: str) -> list[str]:
        return [w for line in found.get(name, []) for w in line.split()]

    def first(name: str) -> str:
        return next(iter(words(name)), "")

    return Facts(env_keys=words("env-keys"), release_tag=first("release-tag"),
                 dotenv_tag=first("dotenv-tag"), compose=first("compose"),
                 project_dirs=words("project-dirs"), dir_projects=words("dir-projects"),
                 oneoffs=words("oneoffs"), http_tool=first("http-tool"),
                 history=found.get("history", []),
                 docker_df=text_of(found, "docker-df"), app_images=text_of(found, "app-images"))


def text_of(found: dict[str, list[str]], name: str) -> str | None:
    """Section `name` as text (None if the document has none)."""
    return "".join(f"{line}\n" for line in found[name]) if name in found else None


def parse_release_files(text: str) -> tuple[list[str], str]:
    """The helper's `release-files` output: (paths rewritten, the command's output after
    them, '' if none ran)."""
    head, marker, rest = text.partition(f"{MARK}{OUTPUT}\n")
    if not marker and text.rstrip("\n").endswith(f"{MARK}{OUTPUT}"):
        head, rest = text.rstrip("\n").removesuffix(f"{MARK}{OUTPUT}"), ""
    rewritten = [line.removeprefix("rewritten ").strip() for line in head.splitlines()
                 if line.startswith("rewritten ")]
    return rewritten, rest
