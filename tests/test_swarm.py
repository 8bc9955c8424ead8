"""`target = "swarm"`: the stack file rendered from the compose file as
`docker compose config` sees it, the command builders, and how Swarm's answers are read. The
live stack tests (sandbox VMs' own engines; never the shared engine) are at the end."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLE

from deploy.commands import swarm as cmd
from deploy.core.errors import DeployError
from deploy.release.swarm import ServiceState, Task, parse_service, parse_tasks, stack_file, verdict

REF = "127.0.0.1:5000/app:v2"


def compose_config(tmp_path: Path, compose: str | None = None) -> dict:
    """What `docker compose config --format json` says of the example (or of `compose`)."""
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("v2", "tests", ".venv"))
    (app / "app.env").write_text("APP_SECRET=s\n")
    if compose:
        (app / "compose.yaml").write_text(compose)
    out = subprocess.run(["docker", "compose", "-p", "demo", "config", "--format", "json"],
                         cwd=app, env={"PATH": "/usr/bin:/bin", "DEPLOY_IMAGE": REF[:-3],
                                       "DEPLOY_TAG": "v2"},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


PROXIED = """
services:
  app:
    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"
    env_file: app.env
    restart: unless-stopped
    volumes: ["./data:/data"]
    ports: ["127.0.0.1:8000:8000"]
    depends_on: [db]
    deploy: {replicas: 2}
  db:
    image: postgres:17
    volumes: ["pg:/var/lib/postgresql/data"]
  proxy:
    image: caddy:2
    ports: ["8080:80"]
    volumes: ["./Caddyfile:/etc/caddy/Caddyfile:ro"]
volumes:
  pg: {}
"""


def test_the_stack_file_rolls_the_app_start_first_with_swarms_rollback(tmp_path) -> None:
    stack = stack_file(compose_config(tmp_path, PROXIED), "app")
    app, proxy = stack["services"]["app"], stack["services"]["proxy"]
    assert app["image"] == REF
    assert app["environment"]["APP_SECRET"] == "s", "app.env's values are in the stack file"
    assert app["deploy"]["replicas"] == 2, "the user's deploy keys stay"
    assert app["deploy"]["endpoint_mode"] == "dnsrr"
    assert app["deploy"]["update_config"] == {
        "parallelism": 1, "order": "start-first", "failure_action": "rollback", "monitor": "10s"}
    assert app["deploy"]["rollback_config"]["order"] == "start-first"
    assert "ports" not in app, "a dnsrr service publishes no port: the proxy reaches its tasks"
    assert not {"restart", "depends_on", "env_file", "container_name"} & set(app)
    assert app["volumes"][0]["type"] == "bind" and app["volumes"][0]["source"].endswith("/data")
    assert "bind" not in app["volumes"][0], "compose's create_host_path is not a stack key"
    assert proxy["ports"] == [{"target": 80, "published": 8080, "mode": "host",
                               "protocol": "tcp"}], "no routing mesh: host-mode ports"
    assert stack["networks"]["default"] == {"driver": "overlay", "attachable": True}
    assert stack["volumes"]["pg"]["name"] == "demo_pg", "the same named volume as compose's"
    assert stack["version"] == "3.8" and "name" not in stack


def test_a_service_the_compose_file_lacks_is_refused(tmp_path) -> None:
    with pytest.raises(DeployError, match="no service 'web'"):
        stack_file(compose_config(tmp_path), "web")


def test_builders() -> None:
    assert cmd.stack_deploy("shop") == ["docker", "stack", "deploy", "--with-registry-auth",
                                        "--prune", "--compose-file", "-", "shop"]
    assert cmd.swarm_init("10.0.0.2") == ["docker", "swarm", "init", "--advertise-addr",
                                          "10.0.0.2"]
    assert cmd.render_config(["docker", "compose", "-p", "x"])[-3:] == ["config", "--format",
                                                                        "json"]
    assert cmd.service_name("shop", "app") == "shop_app"
    assert cmd.service_logs("shop_app", 50, True) == ["docker", "service", "logs", "--no-trunc",
                                                      "--tail", "50", "--follow", "shop_app"]


def task(image: str, state: str, desired: str = "Running", error: str = "") -> Task:
    return Task("shop_app.1", image, desired, state, error)


def test_swarms_answers_read_as_waiting_done_or_rolled_back() -> None:
    old = "127.0.0.1:5000/app:v1@sha256:aa"
    new = f"{REF}@sha256:bb"
    updating = ServiceState(REF, "updating", "update in progress", 1)
    assert verdict(updating, [task(new, "Starting")], REF)[0] == "wait"
    # a stale "completed" right after stack deploy, new task not running yet: wait
    done_before = ServiceState(REF, "completed", "", 1)
    assert verdict(done_before, [task(new, "Starting"), task(old, "Running")], REF)[0] == "wait"
    both = [task(new, "Running"), task(old, "Shutdown", desired="Shutdown")]
    assert verdict(done_before, both, REF) == ("done", f"1/1 task(s) running {REF}")
    rolled = ServiceState("127.0.0.1:5000/app:v1", "rollback_completed",
                          "rollback completed", 1)
    assert verdict(rolled, [task(old, "Running")], REF) == ("rolled_back", "rollback completed")
    paused = ServiceState(REF, "paused", "update paused due to failure", 1)
    assert verdict(paused, [], REF)[0] == "paused"


def test_docker_output_is_parsed() -> None:
    line = json.dumps({"Name": "shop_app.1", "Image": f"{REF}@sha256:bb",
                       "DesiredState": "Shutdown", "CurrentState": "Failed 3 seconds ago",
                       "Error": "task: non-zero exit (1)"})
    (t,) = parse_tasks(line + "\nnot json\n")
    assert (t.tag, t.state, t.line()) == ("v2", "Failed",
                                          "shop_app.1 v2: Failed (task: non-zero exit (1))")
    svc = {"Spec": {"Mode": {"Replicated": {"Replicas": 2}},
                    "TaskTemplate": {"ContainerSpec": {"Image": f"{REF}@sha256:bb"}}},
           "UpdateStatus": {"State": "completed", "Message": "update completed"}}
    assert parse_service(json.dumps(svc)) == ServiceState(REF, "completed", "update completed", 2)
    running = json.dumps({"Name": "shop_app.1", "Image": f"{REF}@sha256:bb", "Node": "vm6",
                          "DesiredState": "Running", "CurrentState": "Running 2 minutes ago"})
    assert parse_tasks(running)[0].line() == "shop_app.1 v2: Running on vm6"


def test_dry_run_migrates_before_the_stack_deploy_and_connects_nowhere(tmp_path) -> None:
    import subprocess
    import sys

    from conftest import child_env, output

    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "fabfile.py").write_text("from deploy.cli.fabtasks import ns  # noqa: F401\n")
    (repo / "compose.yaml").write_text(
        "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n")
    (repo / "deploy.toml").write_text('image = "127.0.0.1:5000/shop"\nhost = "vm.invalid"\n'
                                      'user = "root"\ntarget = "swarm"\nstack = "shop"\n')
    proc = subprocess.run([sys.executable, "-m", "fabric", "deploy", "--tag=v2", "--dry-run"],
                          cwd=repo, env=child_env(), capture_output=True, text=True, timeout=60)
    text = output(proc)
    assert proc.returncode == 0, text
    lines = text.splitlines()

    def first(word: str) -> int:
        return next(i for i, line in enumerate(lines) if word in line)

    migration = first("alembic upgrade head")
    # the checks render the compose file first (as on compose); the stack file is rendered
    # again after the migration
    render = next(i for i, line in enumerate(lines)
                  if "config --format json" in line and i > migration)
    assert first("docker pull") < migration < render < first("docker stack deploy"), text
    assert "DEPLOY_TAG=v2" in lines[render]
    assert lines[first("docker stack deploy")].endswith(
        "docker stack deploy --with-registry-auth --prune --compose-file - shop < (stdin)")


def test_setup_dry_run_joins_the_swarm_workers_after_the_manager(tmp_path) -> None:
    import sys

    from conftest import child_env, output

    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "fabfile.py").write_text("from deploy.cli.fabtasks import ns  # noqa: F401\n")
    (repo / "compose.yaml").write_text(
        "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n")
    (repo / ".env").write_text("")
    (repo / "deploy.toml").write_text(
        'image = "127.0.0.1:5000/shop"\nhost = "10.0.0.5"\nuser = "root"\ntarget = "swarm"\n'
        'swarm_workers = "10.0.0.6, deploy@10.0.0.7:2222"\ndatabase = "none"\n')
    proc = subprocess.run([sys.executable, "-m", "fabric", "setup", "--dry-run"],
                          cwd=repo, env=child_env(), capture_output=True, text=True, timeout=60)
    text = output(proc)
    assert proc.returncode == 0, text
    joins = [line for line in text.splitlines() if "docker swarm join " in line]
    assert [line.split("] ", 1)[0] for line in joins] == ["[10.0.0.6", "[10.0.0.7"], text
    assert joins[0].endswith(
        "docker swarm join --token TOKEN --advertise-addr 10.0.0.6 MANAGER:2377")
    assert text.index("docker swarm init") < text.index("docker swarm join ")


@pytest.mark.parametrize("toml, message", [
    ('swarm_workers = "10.0.0.6"\n', "names hosts to join a swarm, but target is not"),
    ('target = "swarm"\nswarm_workers = "10.0.0.6,Bad_Host"\n',
     "must be hosts ([user@]host[:port]), comma-separated: 'Bad_Host' has upper case"),
])
def test_bad_swarm_workers_are_refused(tmp_path, toml, message) -> None:
    from deploy.core.settings import load_settings

    (tmp_path / "deploy.toml").write_text('image = "r/x"\nhost = "10.0.0.5"\n' + toml)
    with pytest.raises(DeployError) as caught:
        load_settings(tmp_path, environ={})
    assert message in caught.value.message


def test_swarm_membership_is_read() -> None:
    from deploy.release.swarm import parse_membership

    assert parse_membership("active 10.0.0.5:2377 10.0.0.8:2377 \n") == (
        "active", ["10.0.0.5:2377", "10.0.0.8:2377"])
    assert parse_membership("inactive \n") == ("inactive", [])
    assert parse_membership("") == ("unknown", [])


def test_the_apps_environment_goes_through_a_secret_not_the_service_spec(tmp_path) -> None:
    from deploy.release.swarm import ENV_SECRET, env_file_text, env_secret_name, env_through_secret

    stack = stack_file(compose_config(tmp_path), "app")
    env = stack["services"]["app"]["environment"]
    assert env["APP_SECRET"] == "s"
    name = env_secret_name("shop", "app", env)
    env_through_secret(stack, "app", name, [], ["uvicorn", "app.main:app"])
    spec = stack["services"]["app"]
    assert "environment" not in spec and "APP_SECRET" not in json.dumps(stack)
    assert spec["entrypoint"][:2] == ["/bin/sh", "-c"] and spec["command"] == [
        "uvicorn", "app.main:app"]
    assert spec["secrets"] == [{"source": name, "target": ENV_SECRET, "mode": 0o444}]
    assert stack["secrets"][name] == {"external": True}
    # the wrapper, run by dash, sources the file and runs the command with every value exact
    values = {"A": "it's $HOME `x` \\ \"q\"", "B": "line1\nline2", "C": ""}
    secret = tmp_path / ENV_SECRET
    secret.write_text(env_file_text(values))
    wrapper = spec["entrypoint"][2].replace(f"/run/secrets/{ENV_SECRET}", str(secret)) \
        .replace("$$", "$")  # as `docker stack deploy` reads it
    proc = subprocess.run(["sh", "-c", wrapper, ENV_SECRET, "python3", "-c",
                           "import json, os; print(json.dumps({k: os.environ[k] for k in 'ABC'}))"],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == values
    assert env_secret_name("shop", "app", {"A": "1"}) != env_secret_name("shop", "app", {"A": "2"})


@pytest.mark.parametrize("spec, image, expected", [
    ({}, (["/entry.sh"], ["serve"]), ["/entry.sh", "serve"]),
    ({"command": ["run", "x"]}, (["/entry.sh"], ["serve"]), ["/entry.sh", "run", "x"]),
    ({"entrypoint": ["python"]}, (["/entry.sh"], ["serve"]), ["python"]),
    ({"entrypoint": ["python"], "command": ["-m", "x"]}, ([], ["serve"]), ["python", "-m", "x"]),
])
def test_the_secret_wrapper_runs_what_docker_would_have_run(spec, image, expected) -> None:
    from deploy.release.swarm import env_through_secret, parse_image_start

    stack = {"services": {"app": {"image": "x", "environment": {"A": "1"}, **spec}}}
    env_through_secret(stack, "app", "s1", *image)
    assert stack["services"]["app"]["command"] == expected
    assert parse_image_start('["/entry.sh"]\t["serve"]\n') == (["/entry.sh"], ["serve"])
    assert parse_image_start("null\tnull\n") == ([], [])
