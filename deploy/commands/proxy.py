"""Commands for the proxy (Caddy) in front of the apps on a VM, as argument lists.

One Caddy per VM, in its own compose project in `proxy_dir`, on a docker network
(`proxy_network`) that the apps' web services join. Layout of `proxy_dir` on the VM:
    compose.json          Caddy's compose project (JSON is YAML)
    base/head.json        Caddy's config up to the app routes, base/tail.json the rest,
                          base/fallback.json the last route (404: no app has that host)
    apps/PROJECT.json     one route per app: its host names -> the file naming its upstream;
                          a host name is one app's only (apps/PROJECT.dir: that app's app_dir)
    conf/caddy.json       head + routes + tail: what Caddy runs (loaded at start and when a
                          route changes, through the admin API, so a restart runs the same)
    conf/upstreams/PROJECT  the container:port that serves the app, read by Caddy for each
                          request: a switch renames a new file over it, no config reload
    conf/maintenance/PROJECT.html  while it exists, the app's hosts get it as a 503 page
                          (Retry-After: conf/maintenance/PROJECT.retry; who turned it on and
                          why: PROJECT.json); Caddy looks for it per request: no config reload
    run/admin.sock        Caddy's admin API (a unix socket: no container can reach it)
    run/check.sock        a Caddy listener that proxies to the container named in the
                          X-Deploy-Upstream header: health as seen from Caddy's network
    data/, config/        Caddy's certificates and state
    lock                  flock(1) file: one config change at a time across apps
    .deploy/bin/          the VM helper script (deploy/vm/vm_helper.sh): every step longer than
                          one command is a `proxy-*` subcommand of it, run by its path
Everything sent to the VM is POSIX sh; the VM needs curl and flock (util-linux).
"""

from __future__ import annotations

import json

from deploy.commands.vm import helper, helper_in

IN_CONTAINER_RUN = "/run/deploy-proxy"
IN_CONTAINER_CONF = "/etc/deploy-proxy"
ROUTES_MARK = "__DEPLOY_ROUTES__"
ROUTES_DIR = "apps"  # apps/PROJECT.json
UPSTREAM_HEADER = "X-Deploy-Upstream"
SERVICE = "caddy"


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


MAINTENANCE_DIR = "maintenance"
PAGE_LIMIT = 512 * 1024  # Caddy's {file.*} placeholder reads at most 1 MiB


def maintenance_path(project: str, suffix: str, inside: bool = False) -> str:
    """A maintenance file of the app (`.html` the page, `.retry` the Retry-After seconds,
    `.json` who turned it on and why), in proxy_dir or inside Caddy."""
    return f"{IN_CONTAINER_CONF if inside else 'conf'}/{MAINTENANCE_DIR}/{project}{suffix}"


def maintenance_route(project: str) -> dict:
    """While the app's page file exists: 503, the page, Retry-After (both read per request)."""
    return {
        "match": [{"file": {"root": f"{IN_CONTAINER_CONF}/{MAINTENANCE_DIR}",
                            "try_files": [f"/{project}.html"]}}],
        "handle": [{
            "handler": "static_response",
            "status_code": 503,
            "headers": {
                "Retry-After": ["{file." + maintenance_path(project, ".retry", True) + "}"],
                "Content-Type": ["text/html; charset=utf-8"],
                "Cache-Control": ["no-store"],
            },
            "body": "{file." + maintenance_path(project, ".html", True) + "}",
        }],
        "terminal": True,
    }


def route(project: str, hosts: list[str]) -> dict:
    """One app's route: its host names to the container named in its upstream file, or to
    the maintenance page while the app's page file exists.

    Caddy reads the files for each request (the `file` matcher, the `{file.*}` placeholder),
    so a switch, and maintenance on or off, is an atomic rename or removal on the VM and no
    config load: a load (a reload of the servers) can drop a request that arrives at that
    instant. A dial that fails (the container going away) is retried for a few seconds
    instead of answering 502 at once."""
    return {
        "@id": f"deploy-{project}",
        "match": [{"host": hosts}],
        "handle": [{"handler": "subroute", "routes": [
            maintenance_route(project),
            {"handle": [{
                "handler": "reverse_proxy",
                "upstreams": [{"dial": "{file." + upstream_path(project, inside=True) + "}"}],
                "load_balancing": {"try_duration": "5s", "try_interval": "250ms"},
            }]},
        ]}],
        "terminal": True,
    }


def maintenance_on(proxy_dir: str, project: str, retry_after: int, info_json: str) -> list[str]:
    """Serve the page (on stdin) for the app's hosts, with Retry-After: `retry_after`; the
    page file goes in last, by a rename, so a request sees the whole page or the app."""
    return helper_in(proxy_dir, "proxy-maintenance-on", proxy_dir, project, str(retry_after),
                     info_json)


def maintenance_off(proxy_dir: str, project: str) -> list[str]:
    """The app's hosts go to the app again (the page file removed first)."""
    return helper_in(proxy_dir, "proxy-maintenance-off", proxy_dir, project)


def maintenance_state(proxy_dir: str, project: str) -> list[str]:
    """Prints `on` and the JSON of who turned it on, or nothing when it is off."""
    return helper_in(proxy_dir, "proxy-maintenance-state", proxy_dir, project)


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


def write_base(proxy_dir: str, head: str, tail: str) -> list[str]:
    """Create proxy_dir and write Caddy's compose file (on stdin) and base config (not
    loaded yet)."""
    return helper_in(proxy_dir, "proxy-write-base", proxy_dir, head, tail,
                     json.dumps(FALLBACK_ROUTE))


def ensure_network(proxy_dir: str, network: str) -> list[str]:
    return helper_in(proxy_dir, "ensure-network", network)


def requirements(proxy_dir: str) -> list[str]:
    """Exit 1 naming what the VM lacks for the proxy (curl, flock)."""
    return helper_in(proxy_dir, "proxy-requirements")


def assemble(proxy_dir: str) -> list[str]:
    """Under the config lock: conf/caddy.json from head, the app routes, the fallback route
    (404 for a host no app serves), tail."""
    return helper_in(proxy_dir, "proxy-assemble", proxy_dir)


def reload(proxy_dir: str) -> list[str]:
    """Rebuild conf/caddy.json from the app routes and load it (no restart): open connections
    and requests in flight carry on; Caddy keeps the old config if it refuses."""
    return helper_in(proxy_dir, "proxy-reload", proxy_dir)


def wait_admin(proxy_dir: str, timeout: float) -> list[str]:
    """Wait until Caddy's admin API answers (after a start); exit 1 after `timeout`."""
    return helper_in(proxy_dir, "proxy-wait-admin", proxy_dir, str(int(timeout)))


HOST_TAKEN_EXIT = 4  # proxy-set-route: another app's route has one of the hosts


def set_route(proxy_dir: str, project: str, route_json: str, app_dir: str,
              hosts: list[str]) -> list[str]:
    """Make an app's route `route_json` (nothing happens if it already is): write it,
    rebuild, load. If Caddy refuses, the previous route file is put back (Caddy still runs
    the old config) and Caddy's error shown. Only set-up and a change of host names load a
    config. If another app's route has one of `hosts`, nothing is written: it prints
    `PROJECT DIR HOST` lines (as host_owners) and exits HOST_TAKEN_EXIT. `app_dir` is
    kept beside the route (apps/PROJECT.dir) so that such a refusal names the app."""
    return helper_in(proxy_dir, "proxy-set-route", proxy_dir, project, route_json, app_dir,
                     *hosts)


def host_owners(proxy_dir: str, project: str, hosts: list[str]) -> list[str]:
    """`PROJECT DIR HOST` for each of `hosts` that another app's route has (DIR `-` if
    unknown)."""
    return helper_in(proxy_dir, "proxy-host-owners", proxy_dir, project, *hosts)


def read_route(proxy_dir: str, project: str) -> list[str]:
    return ["cat", f"{proxy_dir}/{ROUTES_DIR}/{project}.json"]


def drop_route(proxy_dir: str, project: str) -> list[str]:
    """Remove an app's route and load the config without it (its hosts then answer 404)."""
    return helper_in(proxy_dir, "proxy-drop-route", proxy_dir, project)


def remove_app(proxy_dir: str, project: str) -> list[str]:
    """Remove an app's route and upstream file, and load the config without them."""
    return helper_in(proxy_dir, "proxy-remove-app", proxy_dir, project)


def set_upstream(proxy_dir: str, project: str, upstream: str) -> list[str]:
    """Point the app at `upstream` (container:port): one atomic rename, which the next
    request Caddy receives for the app already reads."""
    return helper_in(proxy_dir, "proxy-set-upstream", proxy_dir, project, upstream)


def read_upstream(proxy_dir: str, project: str) -> list[str]:
    """The upstream file (exit 1 before the first switch: there is none)."""
    return ["cat", f"{proxy_dir}/{upstream_path(project)}"]


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


def poll(proxy_dir: str, container: str, upstream: str, host: str, path: str) -> list[str]:
    """One poll of the health wait: prints `STATE CODE`, the container's health (else its run
    state, `missing` if gone) and the status of one request through Caddy to `upstream`
    (`-` when the state already says it failed)."""
    return helper_in(proxy_dir, "proxy-poll", proxy_dir, container, upstream,
                     check_url(host, path))


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
    `depends_on`), which would cut it off for seconds. Runs in app_dir."""
    return helper("settle", service, *compose_argv)


def settle_services(compose_argv: list[str], services: list[str]) -> list[str]:
    """settle, the other services known (from the compose file the check rendered)."""
    return [*compose_argv, "up", "-d", "--no-deps", "--remove-orphans", *services]


def stop(container_ids: list[str]) -> list[str]:
    """Stop gracefully: SIGTERM, then the container's own stop grace period."""
    return ["docker", "stop", *container_ids]


def retire(container_ids: list[str]) -> list[str]:
    """Stop the containers gracefully (as `stop`), then remove them, in the background on the
    VM: the command returns at once; each is marked retiring until it is gone."""
    return helper("retire", *container_ids)


def wait_retired(container_ids: list[str], timeout: float) -> list[str]:
    """Until those of the containers marked retiring (all of them if none is named) are
    gone (exit 1, naming those left, after `timeout`)."""
    return helper("wait-retired", str(int(timeout)), *container_ids)


def remove(container_ids: list[str], force: bool = False) -> list[str]:
    return ["docker", "rm", *(["--force"] if force else []), *container_ids]


def container_image(container: str) -> list[str]:
    return ["docker", "inspect", "--format", "{{.Image}}", container]


def container_logs(container: str, tail: int = 15) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), container]

