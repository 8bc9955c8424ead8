"""Image references: Docker's grammar for tags and repository names, as this toolkit takes them."""

from __future__ import annotations

import re

from deploy.core.errors import DeployError

TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)"
IMAGE_RE = re.compile(rf"{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*")


def validate_tag(tag: str) -> str:
    """`tag` if it follows Docker's tag grammar in lower case, else a clear error.

    Docker allows upper case in tags; this toolkit does not: its own tags (git SHAs) are lower
    case, and `V1` next to `v1` would be two releases that read as one.
    """
    if not TAG_RE.fullmatch(tag or ""):
        raise DeployError(
            f"{tag!r} is not a valid Docker tag",
            "use 1-128 characters from lower-case letters, digits, '_', '.', '-', "
            "not starting with '.' or '-'",
        )
    if tag != tag.lower():
        raise DeployError(
            f"{tag!r} has upper-case letters: this toolkit requires lower-case tags",
            f"use {tag.lower()!r} (tag the image in lower case: docker tag IMAGE:{tag} "
            f"IMAGE:{tag.lower()})",
        )
    return tag


def validate_image(image: str) -> str:
    """`image` (registry/repository, no tag) if Docker would accept it, else a clear error."""
    if not IMAGE_RE.fullmatch(image or ""):
        raise DeployError(
            f"image name {image!r} is not a valid Docker repository",
            "set image = \"registry.example.com:5000/team/app\" (lower case, no tag) "
            "in deploy.toml",
        )
    return image
