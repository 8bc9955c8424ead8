"""deploy-init turns the proxy on (zero-downtime switches behind Caddy) for an app with a web
service: its port and health path found from its compose file, Dockerfile and routes, its
compose file left as written. An app that cannot go behind the proxy gets proxy = false and
is told why. Fast: deploy-init only."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from conftest import output
from test_corpus import IGNORE, deploy_init, init_repo

from sandbox.apprepo import EXAMPLE, EXAMPLE_POSTGRES

MAIN = """from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict:
    return {}
"""


def tiny_app(root: Path, compose_service: str, dockerfile_tail: str = "",
             main: str = MAIN) -> Path:
    """An app with a compose file whose service `app` is `compose_service` (indented lines),
    a Dockerfile and app/main.py."""
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "main.py").write_text(main)
    (root / "Dockerfile").write_text("FROM python:3.11-slim\nWORKDIR /app\nCOPY app/ ./app/\n"
                                     + dockerfile_tail)
    (root / "compose.yaml").write_text(
        'services:\n  app:\n    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"\n' + compose_service)
    (root / ".env.example").write_text("X=1\n")
    return root


def adopt(root: Path) -> tuple[dict, str]:
    """deploy-init in `root`: (deploy.toml's values, its output)."""
    init_repo(root)
    proc = deploy_init(root)
    assert proc.returncode == 0, output(proc)
    return tomllib.loads((root / "deploy.toml").read_text()), output(proc)


@pytest.mark.parametrize("example", [EXAMPLE, EXAMPLE_POSTGRES], ids=["sqlite", "postgres"])
def test_the_examples_adopted_go_behind_the_proxy_as_their_deploy_toml_says(tmp_path, example):
    """The embedded examples' deploy.toml turn the proxy on with what deploy-init finds."""
    repo = tmp_path / "app"
    shutil.copytree(example, repo, ignore=IGNORE)
    (repo / "deploy.toml").unlink()
    values, out = adopt(repo)
    assert (values["proxy"], values["app_port"], values["health_path"]) == (True, 8000,
                                                                           "/health")
    assert values["proxy_tls"] == "auto" and "proxy_host" not in values
    assert "service 'app' listens on 8000 (its compose ports)" in out
    assert "health path /health (its compose healthcheck)" in out
    assert "- proxy_host: the app's host name(s)" in out
    assert '# proxy_host = "app.example.com"' in (repo / "deploy.toml").read_text()
    # the compose file stays as written (it publishes its port): the deploy's override
    # drops it on the VM
    assert (repo / "compose.yaml").read_text() == (example / "compose.yaml").read_text()
    shipped = tomllib.loads((example / "deploy.toml").read_text())
    assert shipped["proxy"] is True
    assert shipped.get("app_port", 8000) == values["app_port"]
    assert shipped.get("health_path", "/health") == values["health_path"]
    assert shipped.get("compose_file") == "compose.yaml"


@pytest.mark.parametrize("service, dockerfile_tail, main, port, path", [
    # the template's healthcheck: curl on the full path under the API prefix
    ('    healthcheck:\n      test: ["CMD", "curl", "-f", '
     '"http://localhost:8000/api/v1/utils/health-check/"]\n', "", MAIN, 8000,
     "/api/v1/utils/health-check/"),
    ("", 'HEALTHCHECK CMD curl -f http://127.0.0.1:8080/healthz || exit 1\n'
         'CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8080"]\n',
     MAIN, 8080, "/healthz"),
    ("    expose: ['9000']\n", "", MAIN + '\n\n@app.get("/healthz")\ndef hz() -> dict:\n'
     '    return {}\n', 9000, "/healthz"),
    ("", 'CMD gunicorn -k uvicorn.workers.UvicornWorker -b 0.0.0.0:5000 app.main:app\n',
     MAIN.replace("app = FastAPI()", 'app = FastAPI()\nrouter = APIRouter(prefix="/ops")')
     + '\n\n@router.get("/health")\ndef h() -> dict:\n    return {}\n', 5000, "/ops/health"),
    ("", 'CMD ["fastapi", "run", "app/main.py"]\n',
     MAIN + '\n\n@app.get("/ping")\nasync def ping() -> str:\n    return "pong"\n', 8000,
     "/ping"),
])
def test_port_and_health_path_found(tmp_path, service, dockerfile_tail, main, port, path):
    values, out = adopt(tiny_app(tmp_path / "app", service, dockerfile_tail, main))
    assert values["proxy"] is True, out
    assert (values["app_port"], values["health_path"]) == (port, path), out


def test_a_router_included_under_a_prefix_is_not_guessed(tmp_path):
    """A route whose full path depends on an include_router prefix (a setting) is not
    taken: health_path is left for the user to fill in, and said so."""
    main = (MAIN.replace("app = FastAPI()", "app = FastAPI()\nrouter = APIRouter()")
            + '\n\n@router.get("/health")\ndef h() -> dict:\n    return {}\n\n\n'
            "app.include_router(router, prefix=settings.API_V1_STR)\n")
    values, out = adopt(tiny_app(tmp_path / "app", "    ports: ['8000:8000']\n", "", main))
    assert values["proxy"] is True and "health_path" not in values
    assert "- health_path: no health route found" in out


@pytest.mark.parametrize("service, dockerfile_tail, why", [
    ("    network_mode: host\n    ports: ['8000:8000']\n", "",
     "service 'app' has network_mode 'host': it cannot join the proxy's network"),
    ("    container_name: web\n    ports: ['8000:8000']\n", "",
     "service 'app' has container_name 'web': two containers of it run side by side"),
    ("    command: celery -A app.tasks worker\n", 'CMD ["python", "-m", "app.worker"]\n',
     "cannot tell which port service 'app' listens on"),
])
def test_an_app_that_cannot_go_behind_the_proxy_is_told_why(tmp_path, service,
                                                             dockerfile_tail, why):
    repo = tiny_app(tmp_path / "app", service, dockerfile_tail)
    values, out = adopt(repo)
    assert values["proxy"] is False
    assert f"warning: not behind the proxy (proxy = false): {why}" in out
    assert f"# not behind the proxy: {why}" in (repo / "deploy.toml").read_text()
    assert "proxy_host" not in out


def test_no_compose_service_no_proxy(tmp_path):
    repo = tiny_app(tmp_path / "app", "")
    (repo / "compose.yaml").write_text("services:\n  db:\n    image: postgres:17\n")
    values, out = adopt(repo)
    assert values["proxy"] is False
    assert "not behind the proxy (proxy = false): no web service found" in out
