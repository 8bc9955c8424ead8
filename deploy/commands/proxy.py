"""Commands for the proxy (Caddy) in front of the apps on a VM, as argument lists.

One Caddy per VM, in its own compose project in `proxy_dir`, on a docker network
(`proxy_network`) that the apps' web services join. Layout of `proxy_dir` on the VM:
    compose.json          Caddy's compose project (JSON is YAML)
    base/head.json        Caddy's config up to the app routes, base/tail.json the rest,
                          base/fallback.json the last route (404: no app has that host)
    apps/PROJECT.json     one route per app: its host names -> the file naming its upstream
    conf/caddy.json       head + routes + tail: what Caddy runs (loaded at start and when a
                          route changes, through the admin API, so a restart runs the same)
    conf/upstreams/PROJECT  the container:port that serves the app, read by Caddy for each
                          request: a switch renames a new file over it, no config reload
    run/admin.sock        Caddy's admin API (a unix socket: no container can reach it)
    run/check.sock        a Caddy listener that proxies to the container named in the
                          X-Deploy-Upstream header: health as seen from Caddy's network
    data/, config/        Caddy's certificates and state
    lock                  flock(1) file: one config change at a time across apps
Everything sent to the VM is POSIX sh; the VM needs curl and flock (util-linux).
"""

from __future__ import annotations

import json
import shlex

from deploy.runner import sh

q = shlex.quote

IN_CONTAINER_RUN = "/run/deploy-proxy"
IN_CONTAINER_CONF = "/etc/deploy-proxy"
ROUTES_MARK = "__DEPLOY_ROUTES__"
UPSTREAM_HEADER = "X-Deploy-Upstream"
SERVICE = "caddy"
CONFIG_LOCK_WAIT = 60
# A container's state as the health wait reads it: its health, else its run state.
HEALTH_FORMAT = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"


def caddy_config(tls: str, email: str = "") -> dict:
    """Caddy's JSON config with a marker where the app routes go.

    tls: `auto` (Let's Encrypt for the routes' host names, HTTP redirected to HTTPS),
    `internal` (Caddy's own CA, for a sandbox) or `off` (plain HTTP on :80).
    """
    web: dict = {"listen": [":80"] if tls == "off" else [":443"], "routes": [ROUTES_MARK]}
    if tls == "off":
        web["automatic_https"] = {"disable": True}
    check = {
        "listen": [f"unix/{IN_CONTAINER_RUN}/check.sock"],
        "automatic_https": {"disable": True},
        "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [
            {"dial": "{http.request.header." + UPSTREAM_HEADER + "}"}]}]}],
    }
    apps: dict = {"http": {"servers": {"web": web, "check": check}}}
    if tls == "internal":
        apps["tls"] = {"automation": {"policies": [{"issuers": [{"module": "internal"}]}]}}
    elif tls == "auto" and email:
        apps["tls"] = {"automation": {"policies": [
            {"issuers": [{"module": "acme", "email": email}]}]}}
    return {"admin": {"listen": f"unix/{IN_CONTAINER_RUN}/admin.sock"}, "apps": apps}


def config_parts(tls: str, email: str = "") -> tuple[str, str]:
    """The config's text before and after the app routes."""
    head, tail = json.dumps(caddy_config(tls, email)).split(json.dumps(ROUTES_MARK))
    return head, tail


FALLBACK_ROUTE = {"handle": [{"handler": "static_response", "status_code": 404,
                               "body": "no app is served under this host name\n"}]}


def upstream_path(project: str, inside: bool = False) -> str:
    """The file naming the app's serving container (in proxy_dir, or inside Caddy)."""
    return f"{IN_CONTAINER_CONF if inside else 'conf'}/upstreams/{project}"


def route(project: str, hosts: list[str]) -> dict:
    """One app's route: its host names to the container named in its upstream file.

    Caddy reads the file for each request (the `{file.*}` placeholder), so a switch is an
    atomic rename on the VM and no config load: a load (a reload of the servers) can drop a
    request that arrives at that instant. A dial that fails (the container going away) is
    retried for a few seconds instead of answering 502 at once."""
    return {
        "@id": f"deploy-{project}",
        "match": [{"host": hosts}],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{"dial": "{file." + upstream_path(project, inside=True) + "}"}],
            "load_balancing": {"try_duration": "5s", "try_interval": "250ms"},
        }],
        "terminal": True,
    }


def compose_project(image: str, network: str, http_port: str, https_port: str) -> str:
    """Caddy's compose file (JSON): ports published on the VM, the shared network."""
    return json.dumps({
        "services": {SERVICE: {
            "image": image,
            "command": ["caddy", "run", "--config", f"{IN_CONTAINER_CONF}/caddy.json"],
            "environment": {"XDG_CONFIG_HOME": "/config", "XDG_DATA_HOME": "/data"},
            "ports": [f"{http_port}:80", f"{https_port}:443"],
            "volumes": [f"./conf:{IN_CONTAINER_CONF}:ro", f"./run:{IN_CONTAINER_RUN}",
                        "./data:/data", "./config:/config"],
            "networks": ["proxy"],
            "restart": "unless-stopped",
        }},
        "networks": {"proxy": {"name": network, "external": True}},
    }, indent=2) + "\n"


def _assemble() -> str:
    """sh (in proxy_dir, under the config lock): conf/caddy.json from head, the app routes,
    the fallback route (404 for a host no app serves), tail."""
    return (
        "{ cat base/head.json; sep=; for f in apps/*.json base/fallback.json; do "
        "[ -f \"$f\" ] || continue; printf '%s' \"$sep\"; cat \"$f\"; sep=,; done; "
        "cat base/tail.json; } "
        "> conf/caddy.json.tmp && mv conf/caddy.json.tmp conf/caddy.json"
    )


def _load() -> str:
    """sh (in proxy_dir): hand conf/caddy.json to the running Caddy. A reload: open
    connections and requests in flight carry on; Caddy keeps the old config if it refuses."""
    return (
        "code=$(curl -sS -o .load.out -w '%{http_code}' --max-time 30 "
        "--unix-socket run/admin.sock -H 'Content-Type: application/json' "
        "--data-binary @conf/caddy.json http://localhost/load) || code=000; "
        "if [ \"$code\" != 200 ]; then echo \"Caddy refused the config (HTTP $code):\" >&2; "
        "cat .load.out >&2 2>/dev/null; exit 1; fi"
    )


def _locked(proxy_dir: str, script: str) -> list[str]:
    """Run `script` in proxy_dir holding the config lock (one change at a time)."""
    return sh(
        f"cd {q(proxy_dir)} && ( flock -w {CONFIG_LOCK_WAIT} 9 || "
        f"{{ echo 'the proxy config stayed locked for {CONFIG_LOCK_WAIT}s' >&2; exit 1; }}; "
        f"{script} ) 9>>lock"
    )


def write_base(proxy_dir: str, compose_text: str, head: str, tail: str) -> list[str]:
    """Create proxy_dir and write Caddy's compose file and base config (not loaded yet)."""
    d = q(proxy_dir)
    return sh(
        f"mkdir -p {d}/base {d}/apps {d}/conf {d}/run {d}/data {d}/config && cd {d} && "
        f"printf '%s' {q(compose_text)} > compose.json.tmp && mv compose.json.tmp compose.json"
        f" && printf '%s' {q(head)} > base/head.json && printf '%s' {q(tail)} > base/tail.json"
        f" && printf '%s' {q(json.dumps(FALLBACK_ROUTE))} > base/fallback.json"
    )


def ensure_network(network: str) -> list[str]:
    n = q(network)
    return sh(f"docker network inspect {n} >/dev/null 2>&1 || docker network create {n}")


def requirements() -> list[str]:
    """Exit 1 naming what the VM lacks for the proxy (curl, flock)."""
    return sh("missing=; for t in curl flock; do command -v \"$t\" >/dev/null 2>&1 || "
              "missing=\"$missing $t\"; done; [ -z \"$missing\" ] || "
              "{ echo \"missing on the VM:$missing\"; exit 1; }")


def assemble(proxy_dir: str) -> list[str]:
    return _locked(proxy_dir, _assemble())


def reload(proxy_dir: str) -> list[str]:
    """Rebuild conf/caddy.json from the app routes and load it (no restart)."""
    return _locked(proxy_dir, f"{_assemble()} && {_load()}")


def wait_admin(proxy_dir: str, timeout: float) -> list[str]:
    """Wait until Caddy's admin API answers (after a start); exit 1 after `timeout`."""
    return sh(
        f"cd {q(proxy_dir)} && end=$(( $(date +%s) + {int(timeout)} )); "
        "until curl -s -o /dev/null --max-time 2 --unix-socket run/admin.sock "
        "http://localhost/config/; do [ \"$(date +%s)\" -ge \"$end\" ] && exit 1; sleep 0.2; done"
    )


def set_route(proxy_dir: str, project: str, route_json: str) -> list[str]:
    """Make an app's route `route_json` (nothing happens if it already is): write it,
    rebuild, load. If Caddy refuses, the previous route file is put back (Caddy still runs
    the old config). Only set-up and a change of host names load a config."""
    f = q(f"apps/{project}.json")
    return _locked(proxy_dir, (
        f"[ \"$(cat {f} 2>/dev/null)\" = {q(route_json)} ] && exit 0; "
        f"if [ -f {f} ]; then cp {f} {f}.prev; else rm -f {f}.prev; fi; "
        f"printf '%s\\n' {q(route_json)} > {f}.tmp && mv {f}.tmp {f} && "
        f"{_assemble()} && {_load()} || {{ "
        f"if [ -f {f}.prev ]; then mv {f}.prev {f}; else rm -f {f}; fi; {_assemble()}; exit 1; }}"
    ))


def set_upstream(proxy_dir: str, project: str, upstream: str) -> list[str]:
    """Point the app at `upstream` (container:port): one atomic rename, which the next
    request Caddy receives for the app already reads."""
    f = q(upstream_path(project))
    return sh(f"cd {q(proxy_dir)} && mkdir -p conf/upstreams && "
              f"printf '%s' {q(upstream)} > {f}.tmp && mv {f}.tmp {f}")


def read_upstream(proxy_dir: str, project: str) -> list[str]:
    return sh(f"cat {q(f'{proxy_dir}/{upstream_path(project)}')} 2>/dev/null || true")


def admin_get(proxy_dir: str, path: str) -> list[str]:
    """GET a path of Caddy's admin API (e.g. /reverse_proxy/upstreams)."""
    return ["curl", "-sS", "--max-time", "10", "--unix-socket", f"{proxy_dir}/run/admin.sock",
            f"http://localhost{path}"]


def check_url(host: str, path: str) -> str:
    return f"http://{host or 'localhost'}{path}"


def probe(proxy_dir: str, upstream: str, host: str, path: str) -> list[str]:
    """One request through Caddy to `upstream` (container:port); prints the HTTP status."""
    body = probe_body(proxy_dir, upstream, host, path)
    return [*body[:2], "-o", "/dev/null", "-w", "%{http_code}", *body[2:]]


def probe_body(proxy_dir: str, upstream: str, host: str, path: str) -> list[str]:
    """One request through Caddy to `upstream`; prints the answer's body."""
    return ["curl", "-s", "--max-time", "5", "--unix-socket", f"{proxy_dir}/run/check.sock",
            "-H", f"{UPSTREAM_HEADER}: {upstream}", check_url(host, path)]


def wait_upstream(proxy_dir: str, container: str, upstream: str, host: str, path: str,
                  timeout: float, interval: float = 0.2, passes: int = 3) -> list[str]:
    """Wait until `container` is healthy for Docker (or running, with no healthcheck) AND
    answers `path` with 200 through Caddy `passes` times in a row. Prints the final state;
    exit 0 healthy, 1 unhealthy/crashed, 2 timed out."""
    inspect = shlex.join(["docker", "inspect", "--format", HEALTH_FORMAT, container])
    curl = shlex.join(probe(proxy_dir, upstream, host, path))
    return sh(
        f"end=$(( $(date +%s) + {int(timeout)} )); ok=0; bad=0; state=none; code=-; "
        f"while [ \"$(date +%s)\" -lt \"$end\" ]; do "
        f"state=$({inspect} 2>/dev/null || echo missing); "
        "case \"$state\" in "
        "unhealthy|exited|dead|missing) echo \"$state\"; exit 1;; "
        "restarting) bad=$((bad+1)); [ \"$bad\" -ge 2 ] && { echo restarting; exit 1; };; "
        "esac; "
        f"code=$({curl}) || true; "
        "if [ \"$code\" = 200 ]; then ok=$((ok+1)); else ok=0; fi; "
        "case \"$state\" in healthy|running) "
        f"[ \"$ok\" -ge {passes} ] && {{ echo \"$state\"; exit 0; }};; esac; "
        f"sleep {interval}; done; "
        "echo \"timeout ($state, $code through the proxy)\"; exit 2"
    )


def service_containers(project: str, service: str) -> list[str]:
    """ID, name and state of each container of a compose service (one-offs excluded)."""
    return ["docker", "ps", "-a", "--no-trunc",
            "--filter", f"label=com.docker.compose.project={project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--filter", "label=com.docker.compose.oneoff=False",
            "--format", "{{.ID}} {{.Names}} {{.State}}"]


def scale_up(compose_argv: list[str], service: str, count: int, deps: bool) -> list[str]:
    """Start one more container of `service` next to the running ones, none recreated.
    With `deps` (no container of it runs yet) its dependencies are started too."""
    argv = [*compose_argv, "up", "-d", "--no-recreate", "--scale", f"{service}={count}"]
    return [*argv, service] if deps else [*argv, "--no-deps", service]


def settle(compose_argv: list[str], service: str) -> list[str]:
    """After a switch: `compose up -d` for every service but the one just switched (a worker
    on the release's image is recreated with it, as without the proxy); the web service is
    never touched, as compose may decide to recreate a container (it did, for a service with
    `depends_on`), which would cut it off for seconds."""
    services = shlex.join([*compose_argv, "config", "--services"])
    up = shlex.join([*compose_argv, "up", "-d", "--no-deps", "--remove-orphans"])
    return sh(f"others=$({services} | grep -vx {q(service)}) || exit 0; "
              f"[ -z \"$others\" ] || {up} $others")


def stop(container_ids: list[str]) -> list[str]:
    """Stop gracefully: SIGTERM, then the container's own stop grace period."""
    return ["docker", "stop", *container_ids]


def remove(container_ids: list[str], force: bool = False) -> list[str]:
    return ["docker", "rm", *(["--force"] if force else []), *container_ids]


def container_image(container: str) -> list[str]:
    return ["docker", "inspect", "--format", "{{.Image}}", container]


def container_logs(container: str, tail: int = 15) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), container]

