"""The Postgres example as a Swarm stack with its database outside the stack, as the README
lays it out: example-postgres/compose.roles.yaml (its `db` under a profile: the stack leaves
it out; the tool starts it with compose on the manager for backups and migrations) plus the
stack's own Caddy. `fab setup` joins the worker named in `swarm_workers` (already a node
here: said, nothing changed) and prints no token; then the release cycle roles go through:
v1 → v2 with a migration → a v3 that crashes at start (Swarm rolls it back, v2 serves on) →
`fab rollback` → `fab restore` of the backup taken before v2 (the app service scaled to 0
meanwhile, the stack deployed again after it), under a probe through the stack's Caddy: one
Postgres (a compose container on the manager, none in the stack), the rows served by the
stack, 0 failed requests at the switches, backups pruned. Then `fab setup` joins an engine of
its own (vm13) as a worker, printing no token, and says so when it is a node already.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

from conftest import EXAMPLE_POSTGRES
from test_roles_postgres import never_healthy, set_env
from test_swarm_live import (  # noqa: F401  (fixtures)
    CADDYFILE,
    STACK_COMPOSE,
    caddy_image,
    probe,
    served_tags,
    swarm,
    vm_docker,
    wait_version,
)
from vmkit import App, make_app_repo, output, unique

from sandbox.ports import free_port

# the stack's own Caddy, as the live Swarm test runs it (its service and its config)
CADDY_SERVICE = STACK_COMPOSE[STACK_COMPOSE.index("  proxy:\n"):]
KEEP_BACKUPS = 1  # the backup before v1 goes when v2 succeeds: pruning seen, not assumed


def test_a_stack_with_its_database_outside_it(pg_images, sandbox, swarm, caddy_image,  # noqa: F811
                                               tmp_path):
    manager, worker = swarm
    v1, v2 = pg_images.v1, pg_images.v2
    v3 = never_healthy(pg_images, tmp_path)  # v2's code, exiting at start
    repo = make_app_repo(tmp_path / "app", EXAMPLE_POSTGRES)
    app = App.create(repo, pg_images, tmp_path / "xdg-cache", sandbox, vm=manager)
    app.env["DEPLOY_KEEP_BACKUPS"] = str(KEEP_BACKUPS)
    stack = app.stack = unique("s")
    compose = (repo / "example-postgres-roles.yaml")
    compose.write_text((EXAMPLE_POSTGRES / "compose.roles.yaml").read_text().replace(
        "\nvolumes:\n", "\n" + CADDY_SERVICE.replace("CADDY", caddy_image) + "volumes:\n"))
    secrets = {"APP_SECRET": unique("app-secret-"), "POSTGRES_PASSWORD": unique("pg-pw-")}
    set_env(repo, DATABASE_HOST=manager.address, DATABASE_BIND=manager.address,
            DATABASE_PORT=str(free_port()), **secrets)
    with (repo / "deploy.toml").open("a") as toml:
        toml.write(f'\ntarget = "swarm"\nstack = "{stack}"\nswarm_timeout = 120\n'
                   f'swarm_workers = "{worker.address}"\n')
    app.env["DEPLOY_COMPOSE_FILE"] = compose.name
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "swarm, the database outside the stack"], cwd=repo,
                   check=True)
    url = app.proxy_url = f"http://{worker.address}:{app.port}"  # the stack's Caddy
    try:
        setup = app.fab_ok("setup", "-v")
        token = vm_docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
        assert token and token not in setup
        assert f"{worker.address}: already a node of the swarm of {manager.address}" in setup
        app.vm("Caddyfile").write_text(CADDYFILE)

        app.fab_ok("deploy", f"--tag={v1}")
        assert wait_version(url, "1") == "1"
        dbs = app.containers(service="db")
        assert len(dbs) == 1, "the database: one compose container on the manager"
        services = vm_docker(manager, "stack", "services", "--format", "{{.Name}}",
                             stack).stdout.split()
        assert sorted(services) == [f"{stack}_app", f"{stack}_proxy"], services
        # the app's environment reached its tasks (it serves, its database answers) through
        # a Docker secret: the service's definition holds no value of it
        spec = vm_docker(manager, "service", "inspect", f"{stack}_app").stdout
        assert spec and not [k for k, v in secrets.items() if v in spec], spec
        assert f"{stack}_app_env_" in spec
        for name in ("alpha", "beta"):
            app.psql(f"INSERT INTO items (name) VALUES ('{name}')")

        assert len(app.backups()) == 1, "the backup before v1's migration"

        # v2 migrates once, on the manager; the stack rolls start-first, no request lost
        with probe(app) as up:
            out = app.fab_ok("deploy", f"--tag={v2}")
        assert not up.failed, up.summary()
        # (start-first: both tasks answer for a moment, then v2's alone)
        assert up.versions()[0] == "1" and up.versions()[-1] == "2", up.summary()
        assert served_tags(app, swarm) == {v2}
        assert app.db_revision() == "0002"
        assert app.containers(service="db") == dbs, "the same database container, untouched"
        assert phase_line(out, manager, "backup") and "migrate 0001→0002" in out, out
        assert phase_line(out, manager, "switch the stack"), out
        before_v2 = app.history()[-1]["backup"]
        assert app.backups() == [before_v2], "the backup before v1 pruned, keep_backups = 1"

        # v3 crashes at start: Swarm rolls the service back, v2 serves on, nothing recorded
        with probe(app) as crash:
            failed = app.fab("deploy", f"--tag={v3}")
        text = output(failed)
        assert failed.returncode == 1, text
        assert f"error: {v3} did not run healthy; Swarm rolled the service back to {v2}" \
            in text, text
        assert "fix: look at `fab logs`, fix the app and deploy a new tag" in text, text
        assert not crash.failed, crash.summary()
        assert crash.versions() == ["2"], crash.summary()
        assert served_tags(app, swarm) == {v2}
        assert [e["tag"] for e in app.history()] == [v1, v2], "the failed v3 not recorded"
        assert urlopen_json(f"{url}/items") == ["alpha", "beta"]

        # rollback to v1: it runs on v2's schema (expand/contract), no request lost
        with probe(app) as back:
            app.fab_ok("rollback")
        assert not back.failed, back.summary()
        assert back.versions()[0] == "2" and back.versions()[-1] == "1", back.summary()
        assert served_tags(app, swarm) == {v1}
        assert urlopen_json(f"{url}/items") == ["alpha", "beta"], "the tasks read the database"

        # a row written after the backup taken before v2; a --tag on another schema than the
        # backup's is refused before anything changes
        post_item(url, "after the backup")
        assert urlopen_json(f"{url}/items") == ["alpha", "beta", "after the backup"]
        refused = app.fab("restore", f"--backup={before_v2}", f"--tag={v2}")
        text = output(refused)
        assert refused.returncode == 1, text
        assert f"error: --tag={v2} runs on schema 0002, not on the backup's 0001; nothing " \
               "was changed" in text and f"fix: name a release on 0001: --tag={v1}" in text, text
        assert served_tags(app, swarm) == {v1} and app.db_revision() == "0002"

        # the restore: the stack's app scaled to 0 (no task on the database), the backup put
        # back on the manager's Postgres, the stack deployed again at v1 (the release on the
        # backup's schema), Swarm's healthcheck waited for, the restore recorded
        restored = app.fab_ok("restore", f"--backup={before_v2}", f"--tag={v1}")
        for phase in ("stop", "save", "restore", "start"):
            assert phase_line(restored, manager, phase), restored
        assert f"swarm: 1/1 task(s) running {pg_images.ref(v1)}" in restored, restored
        saved = [n for n in app.backups() if "pre-restore" in n]
        assert len(saved) == 1 and f"saved as {saved[0]}" in restored, (saved, restored)
        assert app.db_revision() == "0001"
        assert wait_version(url, "1") == "1"
        assert urlopen_json(f"{url}/items") == ["alpha", "beta"], "the restored rows, served"
        assert served_tags(app, swarm) == {v1}
        assert app.containers(service="app") == [], "no compose app beside the stack"
        assert app.containers(service="db") == dbs, "the same database container"
        # the one before v2, the failed v3's (kept until a release succeeds), the replaced
        kept = app.backups()
        assert len(kept) == 3 and before_v2 in kept and saved[0] in kept and \
            any(n.endswith(f"-{v3}.dump") for n in kept), kept
        last = app.history()[-1]
        assert (last["kind"], last["backup"], last["tag"], last["healthy"]) == \
            ("restore", before_v2, v1, True), last

        status = app.fab_ok("status")
        assert f"swarm:     {stack}_app: serving (1/1 task(s) running {pg_images.ref(v1)})" \
            in status, status
        for name, done in (("v1->v2", up), ("crash", crash), ("rollback", back)):
            print(f"{name}: {done.summary()}")
    finally:
        vm_docker(manager, "stack", "rm", stack)
        app.tear_down()


def phase_line(out: str, vm, phase: str) -> bool:
    """Whether a phase line of `vm` (`[ADDRESS...] lock · check 0.3s · ...`) names `phase`."""
    return any(line.startswith(f"[{vm.address}") and f" {phase}" in line
               for line in out.splitlines())


def post_item(url: str, name: str) -> None:
    request = urllib.request.Request(f"{url}/items", data=json.dumps({"name": name}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def urlopen_json(url: str) -> list[str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return [item["name"] for item in json.load(response)]


JOIN_VM = 13  # an engine of its own that joins the swarm and leaves it again


def leave_swarm(manager, fresh) -> None:
    """Put the fresh engine out of the swarm and its node off the manager's list."""
    vm_docker(fresh, "swarm", "leave", "--force")
    ids = vm_docker(manager, "node", "ls", "--filter", f"name=vm{JOIN_VM}", "-q").stdout.split()
    if ids:
        vm_docker(manager, "node", "rm", "--force", *ids)


def test_fab_setup_joins_a_fresh_engine_and_prints_no_token(sandbox, swarm,  # noqa: F811
                                                            make_app):
    from conftest import sandbox_up

    sandbox_up(JOIN_VM)
    manager, _ = swarm
    fresh = sandbox.vm(JOIN_VM)
    leave_swarm(manager, fresh)  # a run cut short may have left it joined
    app = make_app(vm=manager)
    with (app.repo / "deploy.toml").open("a") as toml:
        toml.write(f'\ntarget = "swarm"\nstack = "{unique("s")}"\n'
                   f'swarm_workers = "{fresh.address}"\n')
    subprocess.run(["git", "commit", "-qam", "a worker to join"], cwd=app.repo, check=True)
    try:
        out = app.fab_ok("setup", "-v")
        token = vm_docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
        assert token and token not in out, out
        assert f"{fresh.address}: joined the swarm of {manager.address} as a worker" in out
        assert "docker swarm join --token ***" in out, "the command shown, its token redacted"
        nodes = vm_docker(manager, "node", "ls", "--format", "{{.Hostname}} {{.Status}} "
                          "{{.ManagerStatus}}").stdout.splitlines()
        assert f"vm{JOIN_VM} Ready " in nodes, nodes
        again = app.fab_ok("setup")
        assert f"{fresh.address}: already a node of the swarm of {manager.address}" in again
    finally:
        leave_swarm(manager, fresh)
