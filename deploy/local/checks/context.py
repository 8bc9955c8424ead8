"""build-context: the image must not ship `.env`, other env files or `.git`.

A file is shipped when a COPY/ADD of the Dockerfile covers it (`COPY . .`, or a directory
holding it) and the context's `.dockerignore` (or `<Dockerfile>.dockerignore`) does not exclude it.
"""

from __future__ import annotations

import re
from pathlib import Path

from deploy.core.settings import Settings
from deploy.local import dockerfile
from deploy.local.checks.result import CheckResult, failed, passed

SKIP = frozenset({".venv", "venv", "node_modules", "__pycache__"})
HARMLESS = frozenset({".env.example", ".env.sample", ".env.template", ".env.dist"})


def sensitive_paths(context: Path) -> list[str]:
    """`.git` and env files under the build context (relative, POSIX)."""
    found = []
    stack = [context]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for entry in entries:
            rel = entry.relative_to(context).as_posix()
            if entry.name == ".git":
                found.append(rel)
            elif entry.is_dir() and not entry.is_symlink():
                if entry.name not in SKIP:
                    stack.append(entry)
            elif entry.name not in HARMLESS and (
                entry.name == ".env" or entry.name.endswith(".env")
                or entry.name.startswith(".env.")
            ):
                found.append(rel)
    return sorted(found)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore / COPY pattern as a regex: `**` spans directories, `*` and `?` do not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            ch = pattern[i]
            out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
            i += 1
    return re.compile(f"^{out}$")


def ignore_patterns(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) for each line of a .dockerignore."""
    if not path.is_file():
        return []
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().lstrip("/").rstrip("/")
        if line.startswith("./"):
            line = line[2:]
        if line:
            rules.append((negated, _pattern_regex(line)))
    return rules


def ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent directory counts."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, regex in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negated
    return result


def copy_sources(parsed: dockerfile.Dockerfile) -> list[str]:
    """The context paths COPY/ADD take (not those `--from` another stage or image)."""
    sources = []
    for stage in parsed.stages:
        for word, rest in stage.instructions:
            if word not in ("COPY", "ADD"):
                continue
            words = rest.split()
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            if rest.lstrip().startswith("["):
                words = re.findall(r'"([^"]*)"', rest)
            sources += words[:-1]
    return sources


def covered(rel: str, sources: list[str]) -> bool:
    for src in sources:
        src = src.removeprefix("./").rstrip("/")
        if src in ("", ".") or rel == src or rel.startswith(src + "/"):
            return True
        if any(ch in src for ch in "*?") and _pattern_regex(src).match(rel.split("/")[0]):
            return True
    return False


def build_context(settings: Settings) -> CheckResult:
    name = "build-context"
    context = settings.path(settings.context)
    df = settings.path(settings.dockerfile)
    parsed = dockerfile.parse(df)
    specific = df.with_name(df.name + ".dockerignore")
    ignore_file = specific if specific.is_file() else context / ".dockerignore"
    rules = ignore_patterns(ignore_file)
    sources = copy_sources(parsed)
    shipped = [rel for rel in sensitive_paths(context)
               if covered(rel, sources) and not ignored(rel, rules)]
    if shipped:
        lines = []
        for rel in shipped:
            line = ".git" if rel.endswith(".git") else ("**/" if "/" in rel else "") + (
                ".env" if Path(rel).name == ".env" else "*.env" if rel.endswith(".env")
                else ".env.*")
            if line not in lines:
                lines.append(line)
        if ".env.*" in lines:
            lines.append("!.env.example")
        where = ignore_file.relative_to(settings.root) if ignore_file.is_relative_to(
            settings.root) else ignore_file
        return failed(
            name,
            f"the image would ship {', '.join(shipped[:4])}"
            + (" …" if len(shipped) > 4 else "")
            + f" (a COPY takes them and {where} does not exclude them)",
            f"add these lines to {where}: {'  '.join(lines)}",
        )
    return passed(name, "no .env, env file or .git goes into the image")
