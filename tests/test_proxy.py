"""The proxy: Caddy in front of the app, blue/green switches with no failed request.

The builders are checked as text; the rest runs against the sandbox VM with a Caddy of this
session's own (its own directory, network and ports). Each switch runs under a probe asking
/version 100 times a second through Caddy, as users would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import child_env
from test_postgres import pg_repo
from vmkit import App, InFlight, Probe, Proxy, output

from deploy.commands import proxy as pcmd
from deploy.commands.vm import project_name
from deploy.core.errors import DeployError
from deploy.core.settings import load_settings
from deploy.release import proxyform
from deploy.release.bluegreen import serving_fails_too
from sandbox.apprepo import EXAMPLE

PROXY_IMAGE = os.environ.get("PROXY_TEST_IMAGE", "caddy:2")


# --------------------------------------------------------------------------- builders


def test_caddy_config_per_tls_mode():
    off = pcmd.caddy_config("off")
    web = off["apps"]["http"]["servers"]["web"]
    assert web["listen"] == [":80"] and web["automatic_https"] == {"disable": True}
    assert "tls" not in off["apps"]
    auto = pcmd.caddy_config("auto", "ops@example.com")
    assert auto["apps"]["http"]["servers"]["web"]["listen"] == [":443"]
    assert auto["apps"]["tls"]["automation"]["policies"][0]["issuers"] == [
        {"module": "acme", "email": "ops@example.com"}]
    internal = pcmd.caddy_config("internal")
    assert internal["apps"]["tls"]["automation"]["policies"][0]["issuers"] == [
        {"module": "internal"}]
    # Admin API and the health-check listener are unix sockets: no container reaches them.
    assert off["admin"]["listen"] == "unix//run/deploy-proxy/admin.sock"
    check = off["apps"]["http"]["servers"]["check"]
    assert check["listen"] == ["unix//run/deploy-proxy/check.sock"]


def test_config_parts_join_routes_into_valid_json():
    head, tail = pcmd.config_parts("off")
    routes = [pcmd.route("a", ["a.test"]), pcmd.route("b", ["b.test", "www.b.test"])]
    config = json.loads(head + ",".join(json.dumps(r) for r in routes) + tail)
    got = config["apps"]["http"]["servers"]["web"]["routes"]
    assert [r["match"][0]["host"] for r in got] == [["a.test"], ["b.test", "www.b.test"]]
    # Each route's upstream is read from its own file, per request (no reload to switch);
    # before it, the app's maintenance page while its file exists (no reload either).
    maintenance, proxied = got[1]["handle"][0]["routes"]
    assert proxied["handle"][0]["upstreams"] == [
        {"dial": "{file./etc/deploy-proxy/upstreams/b}"}]
    assert maintenance["match"] == [{"file": {"root": "/etc/deploy-proxy/maintenance",
                                              "try_files": ["/b.html"]}}]
    page = maintenance["handle"][0]
    assert page["status_code"] == 503
    assert page["body"] == "{file./etc/deploy-proxy/maintenance/b.html}"
    assert page["headers"]["Retry-After"] == ["{file./etc/deploy-proxy/maintenance/b.retry}"]
    assert json.loads(head + tail)["apps"]["http"]["servers"]["web"]["routes"] == []
    fallback = json.loads(head + json.dumps(pcmd.FALLBACK_ROUTE) + tail)
    assert fallback["apps"]["http"]["servers"]["web"]["routes"][0]["handle"][0][
        "status_code"] == 404


def test_scale_up_starts_dependencies_only_on_first_start():
    base = ["docker", "compose", "--file", "c.yaml", "--project-name", "p"]
    assert pcmd.scale_up(base, "app", 2, deps=False)[-4:] == [
        "--scale", "app=2", "--no-deps", "app"]
    first = pcmd.scale_up(base, "app", 1, deps=True)
    assert "--no-deps" not in first and "--no-recreate" in first


# --------------------------------------------------------------------------- on the VM


def new_proxy(sandbox, tls: str = "off") -> Proxy:
    proxy = Proxy(PROXY_IMAGE, sandbox.vm(1), tls=tls)
    if not proxy.has_image():
        pytest.skip(f"no {PROXY_IMAGE} image on the sandbox VM (the sandbox builds it offline;"
                    " PROXY_TEST_IMAGE names another)")
    return proxy


@pytest.fixture(scope="session")
def caddy(sandbox):
    proxy = new_proxy(sandbox)
    yield proxy
    proxy.tear_down()


@pytest.fixture
def proxied(make_app, caddy):
    """An app behind this session's Caddy, set up, with v1 deployed."""
    app = make_app().use_proxy(caddy)
    app.fab_ok("setup")
    return app


def caddy_loads(app) -> int:
    """How many configs Caddy has loaded (its own log lines)."""
    logs = app.vm_docker("logs", *app.proxy.caddy_ids())
    return output(logs).count('"msg":"load complete"')


def test_a_compose_file_that_publishes_ports_goes_behind_the_proxy_as_written(
        make_app, caddy, images):
    """The example's own compose.yaml (it publishes 127.0.0.1:APP_PORT:8000 and joins no
    proxy network), unchanged: the tool's override (.deploy/proxy.yaml) puts it behind
    Caddy, a switch fails no request, and a plain `docker compose up -d` on the VM keeps the
    proxy's form. docker-compose v1 cannot read the override: refused before any upload."""
    app = make_app().use_proxy(caddy)
    app.env["DEPLOY_COMPOSE_FILE"] = "compose.yaml"
    proc = app.fab("setup", env={"DEPLOY_COMPOSE_COMMAND": "v1"})
    text = output(proc)
    assert proc.returncode == 1, text
    assert "error: service 'app' in compose.yaml publishes ports" in text
    assert "docker-compose v1 cannot read" in text and "Traceback" not in text
    assert not app.vm("compose.yaml").exists() and not app.vm("app.env").exists()

    app.fab_ok("setup")
    assert app.vm("compose.yaml").read_text() == (app.repo / "compose.yaml").read_text()
    assert "ports: !reset []" in app.vm(".deploy/proxy.yaml").read_text()
    app.deploy(images.v1)
    assert app.version() == {"version": "1", "revision": "0001"}
    first = app.container_names()
    assert app.vm_docker("port", first[0]).stdout.strip() == ""  # no port of its own
    with Probe(app) as probe:
        app.deploy(images.v2)
    print(f"deploy: {probe.summary()}")
    assert probe.failed == [], probe.summary()
    assert probe.versions() == ["1", "2"], probe.summary()
    second = app.container_names()
    assert len(second) == 1 and second != first
    proc = app.vm_run("docker", "compose", "up", "-d")  # compose reads .env's COMPOSE_FILE
    assert proc.returncode == 0, output(proc)
    assert app.container_names() == second and app.version()["version"] == "2"
    assert app.vm_docker("port", second[0]).stdout.strip() == ""


@pytest.fixture(params=["v2", "v1"])
def compose_flavour(request):
    """docker compose v2 and docker-compose v1.29 (both installed on the sandbox VM)."""
    return request.param


def test_deploy_and_rollback_behind_the_proxy_fail_no_request(proxied, images,
                                                              compose_flavour):
    app = proxied
    app.env["DEPLOY_COMPOSE_COMMAND"] = compose_flavour
    app.deploy(images.v1)
    assert app.version() == {"version": "1", "revision": "0001"}
    first = app.container_names()
    assert len(first) == 1 and app.history()[-1]["container"] == first[0]

    # A deploy of v2 under 100 requests/s, with 5 s requests started every second.
    loads = caddy_loads(app)
    with Probe(app) as probe, InFlight(app, seconds=5) as slow:
        app.deploy(images.v2)
    assert caddy_loads(app) == loads  # the switch did not reload Caddy
    print(f"deploy: {probe.summary()}; 5 s requests: {[h.status for h in slow.hits]}")
    assert probe.failed == [], probe.summary()
    assert len(probe.hits) > 300, probe.summary()
    assert probe.versions() == ["1", "2"], probe.summary()
    assert slow.hits and all(h.status == 200 for h in slow.hits), slow.hits
    switched = probe.first("2")
    across = [h for h in slow.hits if h.version == "1" and h.started < switched < h.ended]
    assert across, "no 5 s request was in flight across the switch"
    second = app.container_names()
    assert len(second) == 1 and second != first
    assert app.history()[-1]["container"] == second[0]
    assert app.version()["version"] == "2"

    status = app.fab_ok("status")
    assert f"{app.host} -> {second[0]}:8000" in status
    assert "/health through Caddy answers 200" in status

    if compose_flavour == "v2":
        # A plain `docker compose up -d` on the VM keeps the release and its container.
        proc = app.vm_compose("up", "-d")
        assert proc.returncode == 0, output(proc)
        assert app.container_names() == second and app.version()["version"] == "2"

    with Probe(app) as probe:
        app.fab_ok("rollback")
    print(f"rollback: {probe.summary()}")
    assert probe.failed == [], probe.summary()
    assert probe.versions() == ["2", "1"], probe.summary()
    assert app.history()[-1]["action"] == "rollback"
    assert app.history()[-1]["container"] == app.container_names()[0]


def test_the_deploy_ends_before_the_old_container_and_the_next_switch_waits_for_it(
        proxied, images):
    """The old container finishes its requests after the deploy says done (the deploy does
    not wait for its stop); a rollback right after waits for it instead of removing it while
    it still answers."""
    app = proxied
    app.deploy(images.v1)
    first = app.containers()
    with Probe(app) as probe, InFlight(app, seconds=5) as slow:
        time.sleep(1.5)  # 5 s requests in flight on v1's container
        out = app.deploy(images.v2)
        retiring = [i[:12] for i in app.retiring()]
        both = app.container_names(settled=False)
        back = app.fab_ok("rollback")
    print(f"deploy, then rollback: {probe.summary()}; 5 s requests: "
          f"{[h.status for h in slow.hits]}")
    assert "old container stopping" in out, out
    assert retiring == first and len(both) == 2, (retiring, first, both)
    assert "not serving" not in back, back  # nothing removed by force
    assert probe.failed == [], probe.summary()
    assert probe.versions() == ["1", "2", "1"], probe.summary()
    assert slow.hits and all(h.status == 200 for h in slow.hits), slow.hits
    assert {h.version for h in slow.hits} == {"1", "2"}, slow.hits
    assert len(app.container_names()) == 1 and app.retiring() == []
    assert app.history()[-1]["action"] == "rollback"


def test_an_unhealthy_image_never_takes_traffic(proxied, images):
    app = proxied
    app.deploy(images.v1)
    before = app.container_names()
    history = app.history()
    with Probe(app) as probe:
        proc = app.fab("deploy", f"--tag={images.unhealthy}",
                       env={"DEPLOY_HEALTH_TIMEOUT": "15"})
    print(f"unhealthy image: {probe.summary()}")
    assert proc.returncode == 1, output(proc)
    text = output(proc)
    assert f"error: {images.unhealthy} did not turn healthy" in text, text
    assert f"{images.v1} kept serving: the proxy was not switched" in text, text
    assert "/health through the proxy answered: " in text and "APP_FAIL_HEALTH=1" in text
    assert probe.failed == [], probe.summary()
    assert probe.versions() == ["1"], probe.summary()
    assert app.container_names() == before  # the new container is gone, the old one serves
    assert app.container_names(running=False) == before
    assert app.history() == history
    assert app.release_env()["DEPLOY_TAG"] == images.v1


def test_two_apps_share_one_proxy_by_host_name(make_app, caddy, images):
    first = make_app().use_proxy(caddy)
    second = make_app().use_proxy(caddy)
    for app in (first, second):
        app.fab_ok("setup")
    first.deploy(images.v1)
    second.deploy(images.v2)
    assert first.version()["version"] == "1" and second.version()["version"] == "2"
    # Each app's route names its own container.
    for app in (first, second):
        status = app.fab_ok("proxy", "status")
        assert f"{app.host} -> {app.container_names()[0]}:8000" in status, status
    # A request for a host no app serves is sent to neither.
    request = urllib.request.Request(first.url("/version"), headers={"Host": "other.test"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 404


def test_proxy_reload_drops_no_request_and_bad_actions_are_refused(proxied, images):
    app = proxied
    app.deploy(images.v1)
    with Probe(app) as probe:
        for _ in range(3):
            app.fab_ok("proxy", "reload")
    print(f"3 x fab proxy reload: {probe.summary()}")
    assert probe.failed == [] and len(probe.hits) > 50, probe.summary()
    proc = app.fab("proxy", "restart")
    assert proc.returncode == 1
    assert "error: unknown proxy action 'restart'" in output(proc)
    assert "fix: use one of: fab proxy status | logs | reload" in output(proc)
    logs = app.fab_ok("proxy", "logs", "--tail=50")
    assert "load complete" in logs  # Caddy's own log of the config loads


def test_dry_run_prints_the_blue_green_plan_and_connects_nowhere(example_repo, tmp_path):
    (example_repo / "fabfile").mkdir()
    (example_repo / "fabfile" / "__init__.py").write_text("from deploy.cli.fabtasks import ns\n")
    env = {"DEPLOY_PROXY": "true", "DEPLOY_PROXY_HOST": "app.example.com",
           "DEPLOY_COMPOSE_FILE": "compose.proxy.yaml", "DEPLOY_HOST": "vm.invalid",
           "DEPLOY_APP_DIR": "/srv/example"}
    proc = subprocess.run([sys.executable, "-m", "fabric", "deploy", "--tag=v9", "--dry-run"],
                          cwd=example_repo, env=child_env(env), capture_output=True, text=True,
                          timeout=60)
    text = output(proc)
    assert proc.returncode == 0, text
    steps = [line for line in text.splitlines() if "$ " in line]
    scale = next(i for i, line in enumerate(steps) if "--scale app=2" in line
                 or "--scale app=1" in line)
    wait = next(i for i, line in enumerate(steps) if " proxy-poll " in line)
    route = next(i for i, line in enumerate(steps) if " proxy-set-route " in line)
    project = project_name("/srv/example")
    switch = next(i for i, line in enumerate(steps) if " proxy-set-upstream " in line)
    assert route < scale < wait < switch, steps
    assert "app.example.com" in steps[route]  # the route is loaded only if it changed
    assert f"{project} {project}-app-N:8000" in steps[switch]
    # the proxy's steps run its own copy of the helper, put in place first
    assert "/srv/.deploy-proxy/.deploy/bin/helper-" in steps[route]
    install = next(i for i, line in enumerate(steps)
                   if "mkdir -p /srv/.deploy-proxy/.deploy/bin" in line)
    assert install < route


def test_ctrl_c_while_the_new_container_starts_leaves_the_old_one_serving(proxied, images):
    app = proxied
    app.deploy(images.v1)
    before = app.container_names()
    with Probe(app) as probe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fabric", "deploy", f"--tag={images.unhealthy}"],
            cwd=app.repo, env=child_env(app.env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            new = ["ps", "-q", "--filter", f"label=com.docker.compose.project={app.project}",
                   "--filter", "label=com.docker.compose.oneoff=False",
                   "--filter", f"ancestor={images.ref(images.unhealthy)}"]
            while not app.vm_docker(*new).stdout.strip() and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1)  # into the health wait
            proc.send_signal(signal.SIGINT)
            out = proc.communicate(timeout=120)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, out
    assert f"interrupted while starting {images.unhealthy}; {images.v1} kept serving" in out
    assert "Traceback" not in out
    assert probe.failed == [], probe.summary()
    assert app.container_names() == before
    assert not app.vm(".deploy/lock").exists()
    assert [e["tag"] for e in app.history()] == [images.v1]


def test_restore_behind_the_proxy_serves_again(proxied, images):
    app = proxied
    app.deploy(images.v1)
    app.post_item("kept")
    app.deploy(images.v2)  # backs up the database first
    backup = [n for n in app.backups() if n.endswith(".sqlite3")][-1]
    app.post_item("after the backup", note="n")
    assert app.item_names() == ["kept", "after the backup"]
    # The example's health_url (a port published without the proxy, which nothing answers
    # on behind it): the restore's verdict is the switch's, through Caddy.
    out = app.fab_ok("restore", f"--backup={backup}",
                     env={"DEPLOY_HEALTH_URL": "http://127.0.0.1:8000/health"})
    assert f"restored {backup}" in out
    record = [e for e in app.history() if e.get("kind") == "restore"][-1]
    assert (record["healthy"], record["tag"]) == (True, images.v1), record
    assert app.wait_http("/health") == 200
    assert app.item_names() == ["kept"]  # the database as it was before v2's deploy
    # ... on v1's schema: v1 is put back with it, its health checked through Caddy
    assert f"{images.v1} serves now, in place of {images.v2}" in out, out
    assert app.version() == {"version": "1", "revision": "0001"}
    assert [i["name"] for i in app.get_json("/items")] == ["kept"]
    status = app.fab_ok("status")
    assert f"release:   {images.v1}\n" in status, status
    serving = app.container_names()
    assert len(serving) == 1 and f"{app.host} -> {serving[0]}:8000" in status, status


@pytest.fixture
def internal_caddy(sandbox):
    """A Caddy of its own with `proxy_tls = "internal"` (set up before, torn down after the
    apps of the test)."""
    proxy = new_proxy(sandbox, tls="internal")
    yield proxy
    proxy.tear_down()


def test_https_with_caddys_internal_ca(internal_caddy, make_app, images):
    proxy = internal_caddy
    app = make_app().use_proxy(proxy)
    app.fab_ok("setup")
    app.deploy(images.v1)
    url = f"https://{app.host}:{proxy.https_port}/version"
    curl = ["curl", "-sS", "--max-time", "10", "--resolve",
            f"{app.host}:{proxy.https_port}:{app.machine.address}"]
    https = subprocess.run([*curl, "--insecure", url], capture_output=True, text=True)
    assert json.loads(https.stdout or "{}").get("version") == "1", https.stderr
    # The certificate is from Caddy's own CA, not a public one: refused without --insecure.
    strict = subprocess.run([*curl, url], capture_output=True, text=True)
    assert strict.returncode == 60, strict.stderr  # curl: peer certificate not trusted
    # Plain HTTP is redirected to HTTPS.
    plain = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                            f"Host: {app.host}", app.url("/version")],
                           capture_output=True, text=True)
    assert plain.stdout == "308", plain


def proxy_app(tmp_path, compose_text: str, env: str = ""):
    from deploy.core.settings import load_settings

    (tmp_path / "deploy.toml").write_text('proxy = true\nproxy_host = "a.test"\n'
                                          'proxy_network = "edge"\n')
    (tmp_path / "compose.yaml").write_text(compose_text)
    (tmp_path / ".env").write_text(env)
    return load_settings(tmp_path, environ={})


def test_the_proxy_form_drops_published_ports_and_joins_the_network(tmp_path):
    """The user's compose file stays as written: the tool's override (.deploy/proxy.yaml on
    the VM) drops the web service's ports and joins the proxy's network."""
    import yaml


    settings = proxy_app(tmp_path, "services:\n  app:\n    image: x\n"
                         "    ports: ['127.0.0.1:8000:8000']\n")
    text = proxyform.override_text(settings)
    assert "    ports: !reset []\n" in text
    plain = yaml.safe_load(text.replace("!reset ", ""))
    assert plain["services"]["app"]["networks"] == {"default": {}, "deploy_proxy": {}}
    assert plain["networks"] == {"deploy_proxy": {"name": "edge", "external": True}}
    # the service's own networks are kept, not replaced by `default`
    settings = proxy_app(tmp_path, "services:\n  app:\n    image: x\n    networks: [back]\n"
                         "networks:\n  back: {}\n")
    assert list(yaml.safe_load(proxyform.override_text(settings))["services"]["app"][
        "networks"]) == ["back", "deploy_proxy"]
    # docker-compose v1 cannot read `!reset`: refused, naming the fix
    settings = proxy_app(tmp_path, "services:\n  app:\n    image: x\n    ports: ['80:80']\n")
    with pytest.raises(DeployError) as caught:
        proxyform.override_text(settings, "v1")
    assert "docker-compose v1 cannot read" in caught.value.message
    assert "Compose v2" in caught.value.fix
    # Already in its proxy form (the network's name from the app's env file, as on the VM):
    # nothing to change, on v1 too.
    already = ("services:\n  app:\n    image: x\n    networks: [default, proxy]\n"
               "networks:\n  proxy:\n    name: ${NET:-other}\n    external: true\n")
    settings = proxy_app(tmp_path, already, env="NET=edge\n")
    assert yaml.safe_load(proxyform.override_text(settings, "v1")) == {"services": {"app": {}}}
    settings = proxy_app(tmp_path, already)  # NET unset: `other`, not the proxy's
    assert "deploy_proxy" in proxyform.override_text(settings)


@pytest.mark.parametrize("line, why", [
    ("network_mode: host", "it cannot join the proxy's network"),
    ("container_name: web", "two containers cannot share one name"),
])
def test_a_service_that_cannot_go_behind_the_proxy_is_told_why(tmp_path, line, why):
    from deploy.release import bluegreen

    settings = proxy_app(tmp_path, f"services:\n  app:\n    image: x\n    {line}\n")
    with pytest.raises(DeployError) as caught:
        proxyform.check_compose(settings)
    assert why in caught.value.message
    assert "proxy = false" in caught.value.fix
    with pytest.raises(DeployError) as caught:
        bluegreen.hosts(load_settings(tmp_path, environ={"DEPLOY_PROXY_HOST": " "}))
    assert "proxy_host" in caught.value.message


def test_compose_merges_the_proxy_form_over_the_examples_compose_file(tmp_path, docker_cli):
    """What the VM's compose makes of the example's compose.yaml with the tool's override:
    no published port, the default network and the proxy's (external)."""
    import shutil


    shutil.copy(EXAMPLE / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / "app.env").write_text("")
    settings = proxy_app(tmp_path, (EXAMPLE / "compose.yaml").read_text())
    (tmp_path / "proxy.yaml").write_text(proxyform.override_text(settings))
    proc = subprocess.run([docker_cli, "compose", "--file", "compose.yaml", "--file",
                           "proxy.yaml", "config", "--format", "json"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    app = config["services"]["app"]
    assert "ports" not in app
    assert set(app["networks"]) == {"default", "deploy_proxy"}
    network = config["networks"]["deploy_proxy"]
    assert (network["name"], network["external"]) == ("edge", True)


def test_the_postgres_example_behind_the_proxy_fails_no_request(pg_images, caddy, sandbox,
                                                               tmp_path):
    image, v1, v2 = pg_images.image, pg_images.v1, pg_images.v2
    app = App.create(pg_repo(tmp_path / "pg"), None, tmp_path / "xdg-cache", sandbox,
                     image=image).use_proxy(caddy)
    app.env["DEPLOY_HEALTH_TIMEOUT"] = "60"
    try:
        app.fab_ok("setup")
        app.deploy(v1)
        assert app.version()["version"] == "1"
        with Probe(app) as probe:
            app.deploy(v2)
        print(f"postgres deploy: {probe.summary()}")
        assert probe.failed == [] and probe.versions() == ["1", "2"], probe.summary()
        with Probe(app) as probe:
            app.fab_ok("rollback")
        print(f"postgres rollback: {probe.summary()}")
        assert probe.failed == [] and probe.versions() == ["2", "1"], probe.summary()
    finally:
        app.tear_down()


def test_rollback_with_downgrade_loses_no_database_request(pg_images, caddy, sandbox, tmp_path):
    """`fab rollback --downgrade` switches to the older release first (it runs on the newer
    schema), then downgrades: /items, which reads the database, never fails meanwhile."""
    image, v1, v2 = pg_images.image, pg_images.v1, pg_images.v2
    app = App.create(pg_repo(tmp_path / "pg"), None, tmp_path / "xdg-cache", sandbox,
                     image=image).use_proxy(caddy)
    app.env["DEPLOY_HEALTH_TIMEOUT"] = "60"
    try:
        app.fab_ok("setup")
        app.deploy(v1)
        app.post_item("kept across the downgrade", embedding=[1, 2, 3])
        app.deploy(v2)
        assert app.version() == {"version": "2", "revision": "0002"}
        with Probe(app, "/items") as probe:
            out = app.fab_ok("rollback", f"--tag={v1}", "--downgrade")
        print(f"rollback --downgrade, /items: {probe.summary()}")
        assert "downgrading the schema 0002 -> 0001" in out, out
        assert len(probe.hits) > 100, probe.summary()
        assert probe.failed == [], probe.summary()
        assert app.version() == {"version": "1", "revision": "0001"}
        assert app.psql("SELECT version_num FROM alembic_version") == [["0001"]]
        assert [i["name"] for i in app.get_json("/items")] == ["kept across the downgrade"]
        last = app.history()[-1]
        assert (last["tag"], last["action"], last["revision"]) == (v1, "rollback", "0001")
    finally:
        app.tear_down()


@pytest.mark.parametrize("problem", ["timeout (starting, 503 through the proxy)",
                                     "timeout (starting, 500 through the proxy)",
                                     "timeout (starting, 502 through the proxy)",
                                     "timeout (starting, 200 through the proxy)"])
def test_a_5xx_on_health_path_never_blames_the_setting(problem):
    """A 5xx is the app's own verdict (both releases may share what is down: the database),
    502 is Caddy reaching no container: neither says health_path is wrong, so the serving
    container is not even asked (no VM here: asking would fail)."""
    assert serving_fails_too(None, problem) == ""  # type: ignore[arg-type]
