"""The Postgres example as a Swarm stack with its database outside the stack, as the README
lays it out: example-postgres/compose.roles.yaml (its `db` under a profile: the stack leaves
it out; the tool starts it with compose on the manager for backups and migrations) plus the
stack's own Caddy. `fab setup` joins the worker named in `swarm_workers` (already a node
here: said, nothing changed) and prints no token; v1 → v2 with a migration → rollback under a
probe through Caddy: one Postgres (a compose container on the manager, none in the stack), the
rows served by every task. Then `fab setup` joins an engine of its own (vm13) as a worker,
printing no token, and says so when it is a node already.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

from conftest import EXAMPLE_POSTGRES
from test_roles_postgres import set_env
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
from vmkit import App, make_app_repo, unique

from sandbox.ports import free_port

# the stack's own Caddy, as the live Swarm test runs it (its service and its config)
CADDY_SERVICE = STACK_COMPOSE[STACK_COMPOSE.index("  proxy:\n"):]


def test_a_stack_with_its_database_outside_it(pg_images, sandbox, swarm, caddy_image,  # noqa: F811
                                               tmp_path):
    manager, worker = swarm
    v1, v2 = pg_images.v1, pg_images.v2
    repo = make_app_repo(tmp_path / "app", EXAMPLE_POSTGRES)
    app = App.create(repo, pg_images, tmp_path / "xdg-cache", sandbox, vm=manager)
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

        with probe(app) as up:
            app.fab_ok("deploy", f"--tag={v2}")
        assert not up.failed, up.summary()
        assert served_tags(app, swarm) == {v2}
        assert app.db_revision() == "0002"
        assert app.containers(service="db") == dbs, "the same database container, untouched"

        with probe(app) as back:
            app.fab_ok("rollback", f"--tag={v1}")
        assert not back.failed, back.summary()
        assert wait_version(url, "1") == "1"
        assert app.item_names() == ["alpha", "beta"]
        assert urlopen_json(f"{url}/items") == ["alpha", "beta"], "the tasks read the database"
    finally:
        vm_docker(manager, "stack", "rm", stack)
        app.tear_down()


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
