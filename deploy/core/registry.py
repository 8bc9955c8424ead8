"""Ask the image registry (HTTP API v2) whether a tag exists, before anything changes on the VM."""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request

from deploy.commands.docker import registry_of
from deploy.core.errors import DeployError, error_words

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


def _split(image: str) -> tuple[str, str]:
    registry = registry_of(image)
    if not registry:
        path = image if "/" in image else f"library/{image}"
        return "registry-1.docker.io", path
    return registry, image[len(registry) + 1 :]


def _base_url(registry: str) -> str:
    host = registry.split(":")[0]
    insecure = host in ("localhost", "::1") or host.startswith("127.")
    return f"{'http' if insecure else 'https'}://{registry}"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _token(challenge: str, user: str, password: str) -> str | None:
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if "realm" not in params:
        return None
    query = {k: v for k, v in params.items() if k in ("service", "scope")}
    request = urllib.request.Request(f"{params['realm']}?{urllib.parse.urlencode(query)}")
    if user:
        request.add_header("Authorization", _basic(user, password))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return None  # the credentials: said so by the caller
        raise DeployError(f"the registry's token service {params['realm']} answered {exc.code}",
                          "check that the registry is up and reachable from here") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise DeployError(f"cannot get a token from {params['realm']}: "
                          f"{getattr(exc, 'reason', None) or error_words(exc)}",
                          "check that the registry is up and reachable from here") from None
    return (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None


def tag_digest(image: str, tag: str, user: str = "", password: str = "") -> str | None:
    """The manifest digest of image:tag in its registry, or None if the tag does not exist."""
    registry, path = _split(image)
    url = f"{_base_url(registry)}/v2/{path}/manifests/{urllib.parse.quote(tag)}"
    headers = {"Accept": MANIFEST_TYPES}
    if user:
        headers["Authorization"] = _basic(user, password)
    for _ in range(2):
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers.get("Docker-Content-Digest", "") or "present"
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code == 401 and challenge.lower().startswith("bearer"):
                token = _token(challenge, user, password)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                    continue
            raise DeployError(
                f"the registry {registry} answered {exc.code} for {image}:{tag}",
                "check registry_user / DEPLOY_REGISTRY_PASSWORD and the image name",
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeployError(
                f"cannot reach the registry {registry}: {reason}",
                "check that the registry is up and reachable from here",
            ) from None
        except http.client.HTTPException as exc:
            raise DeployError(
                f"{registry} did not answer as an HTTP registry: {error_words(exc)}",
                f"check the registry's host and port in the image name ({image})",
            ) from None
    raise DeployError(f"the registry {registry} refused our credentials", "check them")


def require_tag(image: str, tag: str, user: str = "", password: str = "") -> str:
    digest = tag_digest(image, tag, user, password)
    if digest is None:
        raise DeployError(
            f"{image}:{tag} is not in the registry",
            "push it first (inv push / inv deploy), or pick a tag from `fab releases`",
        )
    return digest



def _get_json(url: str, headers: dict[str, str], user: str, password: str) -> dict | None:
    """GET a JSON document of the registry API (a bearer token fetched if asked); None on
    404, unreachable or unreadable."""
    headers = dict(headers)
    if user:
        headers["Authorization"] = _basic(user, password)
    for _ in range(2):
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                data = json.load(response)
                return data if isinstance(data, dict) else None
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code == 401 and challenge.lower().startswith("bearer"):
                token = _token(challenge, user, password)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                    continue
            return None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
            return None
    return None


def manifest_size(manifest: dict) -> int:
    """The bytes an image manifest's config and layers take in the registry (compressed)."""
    parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return sum(p.get("size", 0) for p in parts if isinstance(p, dict)
               and isinstance(p.get("size"), int))


def pick_platform(index: dict, platform: str) -> str:
    """The digest of `platform`'s manifest (e.g. linux/amd64) in an image index ('' if none)."""
    wanted = (platform.split("/") + ["", ""])[:3]
    for entry in index.get("manifests") or []:
        found = (entry.get("platform") or {}) if isinstance(entry, dict) else {}
        if [found.get("os"), found.get("architecture")] == wanted[:2] \
                and (not wanted[2] or found.get("variant") == wanted[2]):
            return str(entry.get("digest", ""))
    return ""


def image_size(image: str, reference: str, user: str = "", password: str = "",
               platform: str = "linux/amd64") -> int | None:
    """The compressed size of image:reference (a tag or a digest) in its registry, of
    `platform` for a multi-platform image; None if the registry does not say."""
    registry, path = _split(image)
    base = f"{_base_url(registry)}/v2/{path}/manifests/"
    headers = {"Accept": MANIFEST_TYPES}
    manifest = _get_json(base + urllib.parse.quote(reference), headers, user, password)
    if manifest and "manifests" in manifest:  # an index: the platform's own manifest
        digest = pick_platform(manifest, platform)
        manifest = _get_json(base + digest, headers, user, password) if digest else None
    if not manifest or "layers" not in manifest:
        return None
    return manifest_size(manifest)
