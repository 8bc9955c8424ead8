"""Adopting the shapes real templates have (the corpus apps, each changed the way a template
writes it): migrations at container start, image lines in every interpolation form, an
in-image venv, parity against what the app declares, settings classes across modules, a
database URL built from parts. Fast: deploy-init and the checks that need no Docker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_no_traceback, commit_all, output
from test_checks import edit
from test_corpus import CORPUS, IGNORE, deploy_init, init_repo, user_env

from deploy.checks.env import parse_image_line


def shape(name: str, dest: Path) -> Path:
    """A copy of a corpus app, not yet a git repo nor adopted."""
    repo = dest / name
    shutil.copytree(CORPUS / name, repo, ignore=IGNORE)
    return repo


def adopted(repo: Path) -> str:
    """git init, deploy-init (an image name added), commit; deploy-init's output."""
    init_repo(repo)
    proc = deploy_init(repo, image=f"127.0.0.1:5000/shape-{repo.name}")
    assert proc.returncode == 0, output(proc)
    return proc.stdout


def only(inv, repo: Path, name: str) -> dict:
    proc = inv(repo, "check", "--json", "--only", name, env=user_env())
    assert_no_traceback(proc)
    assert proc.stdout.startswith("["), output(proc)
    result = json.loads(proc.stdout)[0]
    assert proc.returncode == (0 if result["ok"] else 1)
    return result


# --- migrations at container start ---------------------------------------------------------


def test_compose_command_running_a_prestart_script_fails_migrate_at_start(tmp_path, inv):
    repo = shape("uvws", tmp_path)
    edit(repo / "compose.yaml", '    image: "${IMAGE}:${TAG}"\n',
         '    image: "${IMAGE}:${TAG}"\n'
         '    command: sh -c "sh scripts/prestart.sh && uvicorn app.main:app --host 0.0.0.0"\n')
    out = adopted(repo)
    assert ("warning: the compose.yaml service 'app' command runs migrations at every start "
            "(backend/scripts/prestart.sh)") in out
    result = only(inv, repo, "migrate-at-start")
    assert not result["ok"]
    assert result["reason"].startswith("the compose.yaml service 'app' command runs "
                                       "backend/scripts/prestart.sh, which migrates, at every "
                                       "start: a rollback would start the older release")
    assert result["fix"].startswith("remove the call of backend/scripts/prestart.sh from the "
                                    "compose.yaml service 'app' command; ")
    assert "migrate_command = " in result["fix"]


def test_dockerfile_cmd_running_alembic_fails_and_removing_it_passes(tmp_path, inv):
    repo = shape("poetry", tmp_path)
    edit(repo / "Dockerfile", 'CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", '
         '"8000"]', 'CMD ["sh", "-c", "alembic upgrade head && uvicorn app.main:app --host '
         '0.0.0.0"]')
    out = adopted(repo)
    assert "warning: the Dockerfile CMD runs migrations at every start" in out
    result = only(inv, repo, "migrate-at-start")
    assert not result["ok"]
    assert "the Dockerfile CMD runs `alembic upgrade` at every start" in result["reason"]
    assert result["fix"].startswith("remove the `alembic upgrade` from the Dockerfile CMD; ")
    assert 'migrate_command = "alembic upgrade head"' in result["fix"]
    edit(repo / "Dockerfile", '"alembic upgrade head && uvicorn', '"uvicorn')
    commit_all(repo, "migrations only through migrate_command")
    result = only(inv, repo, "migrate-at-start")
    assert result["ok"], result
    assert result["detail"] == "the container's start runs no migrations"


def test_an_entrypoint_script_in_the_image_that_migrates(tmp_path, inv):
    repo = shape("poetry", tmp_path)
    (repo / "docker-entrypoint.sh").write_text(
        "#!/bin/sh\nset -e\npython -m alembic -c alembic.ini upgrade head\nexec \"$@\"\n")
    edit(repo / "Dockerfile", "COPY app/ ./app/\n",
         "COPY app/ ./app/\nCOPY docker-entrypoint.sh /usr/local/bin/\n"
         'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]\n')
    adopted(repo)
    result = only(inv, repo, "migrate-at-start")
    assert not result["ok"]
    assert result["reason"].startswith("the Dockerfile ENTRYPOINT runs docker-entrypoint.sh, "
                                       "which migrates")


def test_the_unchanged_corpus_apps_do_not_migrate_at_start(tmp_path, inv):
    for name in ("uvws", "poetry"):
        repo = shape(name, tmp_path)
        out = adopted(repo)
        assert "warning:" not in out
        assert only(inv, repo, "migrate-at-start")["ok"]


# --- image lines in every interpolation form ------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("${DEPLOY_IMAGE}:${DEPLOY_TAG}", ("DEPLOY_IMAGE", "DEPLOY_TAG", "", "")),
    ("${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}",
     ("DOCKER_IMAGE_BACKEND", "TAG", "", "latest")),
    ("${IMAGE:?set IMAGE: the registry}:${TAG:?}", ("IMAGE", "TAG", "", "")),
    ("${IMAGE:-127.0.0.1:5000/app}:${TAG:-v1}", ("IMAGE", "TAG", "127.0.0.1:5000/app", "v1")),
    ("${IMAGE-reg/app}:$TAG", ("IMAGE", "TAG", "reg/app", "")),
    ("$IMAGE:$TAG", ("IMAGE", "TAG", "", "")),
])
def test_image_line_forms(line, expected):
    parsed = parse_image_line(line)
    assert parsed is not None
    assert (parsed.repo_variable, parsed.tag_variable, parsed.repo_default,
            parsed.tag_default) == expected


@pytest.mark.parametrize("line", ["myapp:latest", "reg/${IMAGE}:${TAG}", "${IMAGE}", "$$IMAGE:x"])
def test_image_lines_that_are_not_two_variables(line):
    assert parse_image_line(line) is None


def test_init_reads_a_template_image_line_without_asking_for_a_rewrite(tmp_path, inv):
    repo = shape("uvws", tmp_path)
    edit(repo / "compose.yaml", 'image: "${IMAGE}:${TAG}"',
         "image: '${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}'")
    out = adopted(repo)
    assert "write it as" not in out
    assert ("names its image ${DOCKER_IMAGE_BACKEND?Variable not set}:${TAG-latest}: the "
            "deploy sets DOCKER_IMAGE_BACKEND and TAG on the VM") in out
    settings = (repo / "deploy.toml").read_text()
    assert 'image_variable = "DOCKER_IMAGE_BACKEND"' in settings
    assert 'tag_variable = "TAG"' in settings
    # The deploy sets both variables: .env.example need not declare them.
    assert only(inv, repo, "env-complete")["ok"]
