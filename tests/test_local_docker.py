"""`inv build`, `inv smoke` and `inv push` against a real Docker engine and the local registry.

The example image is built once per session (under a unique name, so sessions do not collide)
and reused; the Docker layer cache keeps that build quick after the first time.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REGISTRY, assert_no_traceback, git, make_example_repo, output, run_inv


@dataclass
class Built:
    repo: Path
    image: str  # registry/repository, no tag
    name: str  # repository path in the registry
    sha: str
    tag: str
    env: dict[str, str]
    log: str

    @property
    def ref(self) -> str:
        return f"{self.image}:{self.tag}"


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=300)


def registry_tags(name: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/{name}/tags/list", timeout=10) as r:
            return json.load(r).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the repository does not exist (yet)
            return []
        raise


@pytest.fixture(scope="session")
def built(tmp_path_factory, docker_engine, base_image):
    """The example app, built once: `inv build` in a fresh clean repo copy."""
    repo = make_example_repo(tmp_path_factory.mktemp("built") / "app")
    name = f"example-test-{uuid.uuid4().hex[:10]}"
    image = f"{REGISTRY}/{name}"
    env = {"DEPLOY_IMAGE": image,
           "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("build-cache"))}
    proc = run_inv(repo, "build", env={**env, "DEPLOY_VERBOSE": "1"})  # -v: the command shown
    assert proc.returncode == 0, f"inv build failed:\n{output(proc)}"
    sha = git(repo, "rev-parse", "HEAD")
    yield Built(repo=repo, image=image, name=name, sha=sha,
                tag=git(repo, "rev-parse", "--short=7", "HEAD"),
                env={"DEPLOY_IMAGE": image}, log=output(proc))
    refs = [line for line in docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                                    image).stdout.split() if line]
    if refs:
        docker("image", "rm", "--force", *refs)


def test_build_labels_and_tags_the_image(built):
    assert "docker buildx build --load --platform linux/amd64" in built.log
    inspect = docker("image", "inspect", built.ref)
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == built.sha
    assert labels["org.opencontainers.image.version"] == built.tag
    assert built.ref in info["RepoTags"]
    assert len(built.tag) == 7 and built.sha.startswith(built.tag)


def test_image_has_no_secrets_or_tests(built):
    proc = docker("run", "--rm", built.ref, "sh", "-c", "ls -A /app")
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout.split()
    assert ".env" not in listing and "tests" not in listing
    assert {"app", "migrations", "alembic.ini"} <= set(listing)


def test_smoke_passes(built, inv):
    proc = inv(built.repo, "smoke", env=built.env)
    assert proc.returncode == 0, output(proc)
    assert "smoke: OK" in proc.stdout
    assert_no_traceback(proc)


def test_smoke_fails_on_a_missing_module(built, inv):
    proc = inv(built.repo, "smoke",
               env={**built.env, "DEPLOY_SMOKE_COMMAND": 'python -c "import anthropic"'})
    assert proc.returncode == 1, output(proc)
    text = output(proc)
    assert f"error: smoke test failed in {built.ref}" in text
    assert "ModuleNotFoundError: No module named 'anthropic'" in text
    assert "fix: " in text
    # The container's traceback is shown; our own process prints none.
    assert not [line for line in text.splitlines() if 'File "' in line and "deploy/" in line]
    assert 'File "<string>"' in text  # the container's
    assert "the image lacks the module 'anthropic'" in text


def test_smoke_runs_with_env_example_and_names_a_missing_setting(built, inv):
    show = "python -c \"import os; print(os.environ['APP_SECRET'])\""
    proc = inv(built.repo, "smoke", env={**built.env, "DEPLOY_SMOKE_COMMAND": show})
    assert proc.returncode == 0, output(proc)
    assert "smoke: change-me" in proc.stdout  # .env.example's placeholder, never .env's value
    proc = inv(built.repo, "smoke", env={
        **built.env, "DEPLOY_SMOKE_COMMAND": "python -c \"import os; os.environ['OPENAI_KEY']\""})
    assert proc.returncode == 1
    assert ("the app needs setting(s) OPENAI_KEY (it ran with the variables of .env.example)"
            in proc.stderr)
    assert "smoke_env_file" in proc.stderr and "requirements" not in proc.stderr
    assert "KeyError: 'OPENAI_KEY'" in proc.stderr  # the container's own output


def test_smoke_boot_answers_health(built, inv):
    proc = inv(built.repo, "smoke", "--boot", env=built.env)
    assert proc.returncode == 0, output(proc)
    assert "boot: /health answered 200" in proc.stdout
    # The boot container is removed afterwards.
    leftover = docker("ps", "-a", "--filter", f"ancestor={built.ref}", "--format", "{{.Names}}")
    assert leftover.returncode == 0 and leftover.stdout.strip() == ""


def test_smoke_boot_fails_without_app_secret(built, inv, tmp_path):
    env_file = tmp_path / "no-secret.env"
    env_file.write_text("MODEL_NAME=x\n")
    proc = inv(built.repo, "smoke", "--boot",
               env={**built.env, "DEPLOY_ENV_FILE": str(env_file), "DEPLOY_BOOT_TIMEOUT": "8"})
    assert proc.returncode == 1, output(proc)
    assert "did not answer 200 on /health" in proc.stderr
    assert "last: 503" in proc.stderr
    assert_no_traceback(proc)


def test_smoke_of_an_unbuilt_version_says_build_first(built, inv):
    proc = inv(built.repo, "smoke", "--version", "never-built", env=built.env)
    assert proc.returncode == 1
    assert f"there is no local image {built.image}:never-built" in proc.stderr
    assert_no_traceback(proc)


def test_push_only_after_smoke(built, inv, registry):
    # This test's own cache: the image has not been smoked here.
    refused = inv(built.repo, "push", env=built.env)
    assert refused.returncode == 1, output(refused)
    assert "has not passed the smoke test" in refused.stderr
    assert f"inv smoke --version {built.tag}" in refused.stderr
    assert_no_traceback(refused)
    assert registry_tags(built.name) == []

    smoke = inv(built.repo, "smoke", env=built.env)
    assert smoke.returncode == 0, output(smoke)
    pushed = inv(built.repo, "push", env=built.env)
    assert pushed.returncode == 0, output(pushed)
    assert f"pushed {built.ref} sha256:" in pushed.stdout
    assert set(registry_tags(built.name)) == {built.tag, "latest"}


def test_build_without_engine_is_a_one_line_error(example_repo, inv, docker_cli):
    proc = inv(example_repo, "build", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert proc.returncode == 1
    errors = [line for line in output(proc).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output(proc)
    assert "Docker engine" in errors[0]
    assert_no_traceback(proc)


def test_build_without_dockerfile_is_a_clear_error(example_repo, inv):
    (example_repo / "Dockerfile").unlink()
    proc = inv(example_repo, "build")
    assert proc.returncode == 1
    assert f"error: no Dockerfile at {example_repo / 'Dockerfile'}" in proc.stderr
    assert_no_traceback(proc)
