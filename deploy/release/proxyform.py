"""The app's web service behind the proxy, read on the laptop: whether its compose file lets
it go there (`proxy_form`), and the compose override the tool merges over it on the VM
(`.deploy/proxy.yaml`: published ports dropped, the proxy's network joined). Pure: no VM, so
the VM's release files (deploy/vm/vm.py) and the blue/green switch (bluegreen.py) both use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import yaml

from deploy.core.dotenvfile import read_env_file
from deploy.core.errors import DeployError
from deploy.core.settings import Settings

NETWORK_KEY = "deploy_proxy"  # the proxy's network as the tool's override file names it


@dataclass(frozen=True)
class ProxyForm:
    """What the app's web service needs to go behind the proxy, read from its compose file."""

    ports: list  # published ports: dropped (two containers run side by side in a switch)
    networks: list[str]  # the networks the service names ([] = compose's `default`)
    joined: bool  # it already joins proxy_network


def proxy_form(settings: Settings) -> ProxyForm:
    """Before any connection: read the app's compose file for the proxy. Refuses (saying
    why) a web service that cannot go behind it: one with its own network mode (host
    networking: no network to join) or a fixed container name (two containers run side by
    side during a switch)."""
    path = settings.path(settings.compose_file)
    data = yaml.safe_load(path.read_text()) or {}
    service = (data.get("services") or {}).get(settings.service)
    if not isinstance(service, dict):
        raise DeployError(f"{path.name} has no service '{settings.service}'",
                          "set `service` in deploy.toml to the web service's name")
    off = "or set proxy = false (each release then recreates the container: requests fail " \
          "for its seconds)"
    if service.get("network_mode"):
        raise DeployError(
            f"service '{settings.service}' in {path.name} has network_mode "
            f"{service['network_mode']!r}: it cannot join the proxy's network, so it cannot go "
            "behind the proxy", f"remove `network_mode:` from service '{settings.service}', "
            + off)
    if service.get("container_name"):
        raise DeployError(
            f"service '{settings.service}' in {path.name} has container_name "
            f"{service['container_name']!r}: behind the proxy two containers of it run side "
            "by side during a switch, and two containers cannot share one name",
            f"remove `container_name:` from service '{settings.service}', " + off)
    networks = service.get("networks") or []
    names = [str(n) for n in networks] if isinstance(networks, dict | list) else []
    top = data.get("networks") or {}
    env_path = settings.path(settings.env_file)
    # On the VM compose reads the app's env file (it becomes .env there), then the shell's.
    values = {**(read_env_file(env_path) if env_path.exists() else {}), **os.environ}
    joined = any(
        isinstance(top.get(key), dict) and top[key].get("external")
        and _interpolate(str(top[key].get("name") or key), values) == settings.proxy_network
        for key in names)
    return ProxyForm(ports=list(service.get("ports") or []), networks=names, joined=joined)


def check_compose(settings: Settings) -> None:
    """Before any connection: the app's compose file can go behind the proxy (proxy_form)."""
    proxy_form(settings)


def override_text(settings: Settings, kind: str = "v2") -> str:
    """The compose file the tool merges over the app's (`.deploy/proxy.yaml` on the VM): its
    web service's published ports dropped (Caddy publishes 80/443) and the proxy's network
    joined, so the user's compose file stays as written. docker-compose v1 cannot drop a
    port in an override (`!reset`): refused, naming the fix."""
    form = proxy_form(settings)
    name = settings.compose_file
    lines = [f"# Written by the deploy tool (proxy = true) from {name}: do not edit, every",
             "# `fab setup` and deploy rewrites it. Service "
             f"'{settings.service}' behind the proxy.", "services:", f"  {settings.service}:"]
    if form.ports:
        if kind == "v1":
            raise DeployError(
                f"service '{settings.service}' in {name} publishes ports {form.ports}; behind "
                "the proxy the tool drops them in an override (`ports: !reset []`), which "
                "docker-compose v1 cannot read", "install Docker Compose v2 (2.24.4 or later) "
                f"on the VM, or remove `ports:` from service '{settings.service}'")
        lines.append("    ports: !reset []")
    if not form.joined:
        lines += ["    networks:", *(f"      {json.dumps(n)}: {{}}" for n in
                                      form.networks or ["default"]),
                  f"      {NETWORK_KEY}: {{}}",
                  "networks:", f"  {NETWORK_KEY}:",
                  f"    name: {json.dumps(settings.proxy_network)}", "    external: true"]
    elif not form.ports:
        lines[-1] += " {}"  # nothing to change: already in its proxy form
    return "\n".join(lines) + "\n"


def _interpolate(value: str, values: dict[str, str]) -> str:
    """A whole-value `${VAR}` / `${VAR:-default}` as compose reads it (enough for a name)."""
    if not (value.startswith("${") and value.endswith("}")):
        return value
    name, _, default = value[2:-1].partition(":-")
    return values.get(name) or default
