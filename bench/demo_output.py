"""Lines and longest line of each release of `inv demo`'s output (the README's figures).

    .venv/bin/inv demo > demo.log 2>&1; .venv/bin/python bench/demo_output.py demo.log
"""

from __future__ import annotations

import sys

from deploy.core.runner import strip_escapes


def sections(text: str) -> list[tuple[str, list[str]]]:
    """The demo's `======== NAME ====` sections, each with its lines (blank ones dropped)."""
    out: list[tuple[str, list[str]]] = []
    for line in strip_escapes(text).splitlines():
        if line.startswith("======== "):
            out.append((line.strip("= ").strip(), []))
        elif out and line.strip():
            out[-1][1].append(line)
    return out


def main(path: str) -> None:
    text = open(path, encoding="utf-8", errors="replace").read()
    print(f"{'section':<48} {'lines':>5} {'build':>5} {'longest':>7} {'$ lines':>7}")
    for name, lines in sections(text):
        commands = sum(1 for line in lines if "] $ " in line)  # not the demo's own `$ fab`
        build = sum(1 for line in lines if line.startswith("#"))  # buildx's own progress
        print(f"{name[:48]:<48} {len(lines):>5} {build:>5} {max(map(len, lines), default=0):>7} "
              f"{commands:>7}")
    print(f"ESC bytes: {text.count(chr(27))}")


if __name__ == "__main__":
    main(sys.argv[1])
