"""Which release serves after `fab restore`: the one whose schema is the backup's.

Data restored from before a migration is on the older schema; the release that serves must run
on it. A release runs on the schemas its release records name: a deploy records the revision it
migrated to, a rollback the revision it served on (healthy). The decision reads only the
history and the backup's manifest, before anything changes on the VM.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.core import refs
from deploy.core.errors import DeployError
from deploy.vm.vm import is_release


@dataclass(frozen=True)
class Match:
    """The release to serve after the restore and why ('' when it is the serving one)."""

    tag: str
    why: str = ""


def schemas_of(history: list[dict], tag: str) -> list[str]:
    """The revisions release `tag` is recorded running on, oldest first, each once."""
    found: list[str] = []
    for entry in history:
        revision = entry.get("revision") or ""
        if is_release(entry) and entry.get("tag") == tag and revision and revision not in found:
            found.append(revision)
    return found


def releases_on(history: list[dict], revision: str) -> list[str]:
    """The recorded releases that run on `revision`, newest record last, each once."""
    tags = [e["tag"] for e in history if is_release(e) and e.get("revision") == revision]
    return list(dict.fromkeys(reversed(tags)))[::-1]


def recorded_releases(history: list[dict]) -> str:
    """`v1 (schema 0001), v2 (schema 0002)`: every recorded release with its schemas."""
    tags = list(dict.fromkeys(e["tag"] for e in history if is_release(e)))
    return ", ".join(f"{t} (schema {'/'.join(schemas_of(history, t)) or 'unknown'})"
                     for t in tags) or "none"


def serving_when_taken(history: list[dict], name: str) -> str:
    """The release that served when backup `name` was taken: the `previous` of the release
    record that names it ('' if none does)."""
    return next((e.get("previous") or "" for e in reversed(history)
                 if is_release(e) and e.get("backup") == name), "")


def matching_release(history: list[dict], manifest: dict, name: str, current: str,
                     tag: str = "") -> Match:
    """The release to serve after restoring backup `name` (its `manifest`, {} if it has none)
    while `current` serves; `tag`: the one `--tag` names. Raises DeployError (nothing was
    changed) when `tag` is not a recorded release on the backup's schema, or when the backup's
    schema is not the serving release's and no recorded release runs on it."""
    revision = str(manifest.get("revision") or "")
    nothing = "nothing was changed"
    if tag:
        refs.validate_tag(tag)
        if not any(is_release(e) and e.get("tag") == tag for e in history):
            raise DeployError(f"--tag={tag} is not a recorded release on this VM; {nothing}",
                              f"name one of `fab releases`: {recorded_releases(history)}")
        ran = schemas_of(history, tag)
        if not revision:
            raise DeployError(
                f"the backup {name} records no schema (no manifest, or none in it), so "
                f"nothing says --tag={tag} runs on its data; {nothing}",
                f"restore it without --tag: `fab restore --backup={name}`")
        if revision not in ran:
            others = releases_on(history, revision)
            raise DeployError(
                f"--tag={tag} runs on schema {'/'.join(ran) or 'unknown'}, not on the "
                f"backup's {revision}; {nothing}",
                (f"name a release on {revision}: --tag={others[-1]} (releases on it: "
                 f"{', '.join(others)})" if others else
                 f"no recorded release runs on {revision}; recorded: "
                 f"{recorded_releases(history)}"))
        if tag == current:
            return Match(current)
        return Match(tag, f"--tag={tag} runs on the backup's schema {revision}")
    ran = schemas_of(history, current)
    last: dict = next((e for e in reversed(history)
                       if is_release(e) and e.get("tag") == current), {})
    # The same schema, or nothing to tell them apart (no revision in the backup; none recorded
    # when the serving release last turned healthy, e.g. a rollback whose older image could
    # not name the newer schema): the restore keeps the serving release, as it always did.
    if not (revision and current and last.get("revision")) or revision in ran:
        return Match(current)
    candidates = releases_on(history, revision)
    before = serving_when_taken(history, name)
    if before in candidates:
        return Match(before, f"it served on schema {revision} when the backup was taken")
    made_for = str(manifest.get("tag") or "")
    if made_for in candidates:
        return Match(made_for, f"the backup's manifest names it, on schema {revision}")
    if candidates:
        return Match(candidates[-1], f"the newest recorded release on schema {revision}")
    raise DeployError(
        f"the backup {name} holds schema {revision}, but {current} runs on "
        f"{'/'.join(ran)} and no recorded release runs on {revision}: restored, the data "
        f"would not match the code that serves; {nothing}",
        f"--tag=T names the release to serve, one recorded on schema {revision} (none is; "
        f"recorded: {recorded_releases(history)}); pick another backup from `fab backups`")
