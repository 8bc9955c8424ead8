"""Command construction of the local half, with Invoke's MockContext behind the Runner:
nothing here needs Docker."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import commit_all, git
from invoke import MockContext, Result

from deploy.commands import docker
from deploy.core import refs
from deploy.core.errors import DeployError
from deploy.core.runner import Runner
from deploy.core.settings import load_settings
from deploy.local import git as deploy_git
from deploy.local import imagebuild

IMAGE = "127.0.0.1:5000/example"
IMAGE_ID = "sha256:" + "ab" * 32
PASSWORD = "s3cret-pa55word"


def runner_for(run: dict | None = None, **kwargs) -> tuple[Runner, MockContext, io.StringIO]:
    ctx = MockContext(run=run or {})
    out = io.StringIO()
    return Runner(ctx, out=out, clock=lambda: 0.0, **kwargs), ctx, out


def engine(overrides: dict | None = None) -> dict:
    """MockContext answers for a working engine with buildx and an image that exists.

    `overrides` come first: MockContext answers with the first pattern that matches.
    """
    answers = {
        re.compile(r"^docker info\b"): Result("20.10.24"),
        re.compile(r"^docker buildx version$"): Result("github.com/docker/buildx 0.13.1"),
        re.compile(r"^docker image inspect --format '\{\{\.Id\}\}' "): Result(IMAGE_ID + "\n"),
        re.compile(r"^docker image inspect --format '\{\{\.Id\}\} \{\{json \.RepoDigests\}\}' "):
            Result(f'{IMAGE_ID} ["{IMAGE}@sha256:{"cd" * 32}"]'),
        re.compile(r"^docker (build|buildx build|push|tag|login|run|rm|port)\b"): Result(""),
    }
    overrides = overrides or {}
    return {**overrides, **{k: v for k, v in answers.items() if k not in overrides}}


@pytest.fixture
def settings(example_repo: Path):
    return load_settings(example_repo, environ={})


@pytest.fixture
def smoked_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache" / "deploy-toolkit" / "smoked.json"
    monkeypatch.setattr(imagebuild, "SMOKED_FILE", path)
    return path


def argv_of(history: list[str], prefix: str) -> list[str]:
    found = [shlex.split(c) for c in history if c.startswith(prefix)]
    assert len(found) == 1, history
    return found[0]


# --- build ---------------------------------------------------------------------------------


def test_build_uses_buildx_load_with_platform_tag_and_oci_labels(settings, example_repo):
    runner, _, out = runner_for(engine(), echo=True)  # -v
    ref = imagebuild.build(settings, runner, "abc1234")
    assert ref == f"{IMAGE}:abc1234"
    argv = argv_of(runner.history, "docker buildx build")
    assert argv[:6] == ["docker", "buildx", "build", "--load", "--platform", "linux/amd64"]
    assert argv[argv.index("--file") + 1] == str(example_repo / "Dockerfile")
    assert argv[argv.index("--tag") + 1] == f"{IMAGE}:abc1234"
    labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
    assert labels["org.opencontainers.image.revision"] == git(example_repo, "rev-parse", "HEAD")
    assert labels["org.opencontainers.image.version"] == "abc1234"
    created = labels["org.opencontainers.image.created"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created), created
    assert labels["org.opencontainers.image.source"] == str(example_repo)
    assert argv[-1] == str(example_repo)  # the context comes last
    assert f"$ {runner.history[-1]}" in out.getvalue()  # the build command is shown


def test_build_source_label_is_the_git_remote(settings, example_repo):
    git(example_repo, "remote", "add", "origin", "https://git.example.com/team/app.git")
    runner, _, _ = runner_for(engine())
    imagebuild.build(settings, runner, "v1")
    argv = argv_of(runner.history, "docker buildx build")
    assert "org.opencontainers.image.source=https://git.example.com/team/app.git" in argv


def test_build_falls_back_to_docker_build_without_buildx(settings):
    runner, _, out = runner_for(engine({
        re.compile(r"^docker buildx version$"): Result("", stderr="not a docker command", exited=1)
    }))
    imagebuild.build(settings, runner, "abc1234")
    assert not [c for c in runner.history if c.startswith("docker buildx build")]
    argv = argv_of(runner.history, "docker build ")
    assert "--platform" not in argv and "--load" not in argv
    assert argv[argv.index("--tag") + 1] == f"{IMAGE}:abc1234"
    assert "notice: docker buildx is missing; using plain `docker build`" in out.getvalue()


def test_build_without_engine_is_a_clear_error(settings):
    runner, _, _ = runner_for(engine({
        re.compile(r"^docker info\b"): Result("", stderr="Cannot connect", exited=1)
    }))
    with pytest.raises(DeployError) as err:
        imagebuild.build(settings, runner, "abc1234")
    assert "no Docker engine answers" in err.value.message
    assert not [c for c in runner.history if "build" in c]


def test_build_failure_names_the_image(settings):
    runner, _, _ = runner_for(engine({
        re.compile(r"^docker buildx build\b"): Result("", stderr="boom", exited=1)
    }))
    with pytest.raises(DeployError) as err:
        imagebuild.build(settings, runner, "abc1234")
    assert err.value.message == f"building {IMAGE}:abc1234 failed"


def test_build_without_image_setting_is_an_error(example_repo):
    (example_repo / "deploy.toml").write_text('platform = "linux/amd64"\n')
    runner, _, _ = runner_for(engine())
    with pytest.raises(DeployError) as err:
        imagebuild.build(load_settings(example_repo, environ={}), runner, "abc1234")
    assert "setting 'image' is not set" in err.value.message
    assert runner.history == []


@pytest.mark.parametrize("tag", ["bad tag;rm -rf", ".x", "-x", "a" * 129, "", "a/b", "ü"])
def test_invalid_tag_is_rejected_before_any_command(settings, tag):
    for step in (imagebuild.build, imagebuild.smoke, imagebuild.push):
        runner, ctx, _ = runner_for(engine())
        with pytest.raises(DeployError) as err:
            step(settings, runner, tag)
        assert "is not a valid Docker tag" in err.value.message
        assert runner.history == []
        assert ctx.run.call_count == 0


@pytest.mark.parametrize("tag", ["a", "a" * 128, "v1.2.3", "abc1234-dirty-0123abcd", "_x", "a.b-c"])
def test_valid_tags_are_accepted(tag):
    assert refs.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["A.b-C", "V1", "abc1234-DIRTY"])
def test_upper_case_tags_are_refused_with_the_lower_case_fix(tag):
    """Docker allows them; this toolkit requires lower-case tags (its own are git SHAs)."""
    with pytest.raises(DeployError) as err:
        refs.validate_tag(tag)
    assert "requires lower-case tags" in err.value.message
    assert repr(tag.lower()) in err.value.fix


@pytest.mark.parametrize("image", ["Example", "reg:5000/", "app:latest", "a//b", "-app"])
def test_invalid_image_names_are_rejected(image):
    with pytest.raises(DeployError):
        refs.validate_image(image)


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("127.0.0.1:5000/example", "127.0.0.1:5000"),
        ("registry.example.com/team/app", "registry.example.com"),
        ("localhost/app", "localhost"),
        ("team/app", ""),
        ("app", ""),
    ],
)
def test_registry_of(image, registry):
    refs.validate_image(image)
    assert docker.registry_of(image) == registry


# --- dry run -------------------------------------------------------------------------------


def test_dry_run_prints_every_command_and_runs_nothing(settings, smoked_file):
    runner, ctx, out = runner_for(None, dry_run=True)  # any real call would raise
    imagebuild.build(settings, runner, "abc1234")
    imagebuild.smoke(settings, runner, "abc1234")
    imagebuild.push(settings, runner, "abc1234")
    assert ctx.run.call_count == 0
    printed = out.getvalue()
    for command in runner.history:
        assert f"$ {command}" in printed
    starts = [shlex.split(c)[:3] for c in runner.history]
    assert starts == [
        ["docker", "buildx", "build"],
        ["docker", "run", "--rm"],
        ["docker", "push", f"{IMAGE}:abc1234"],
        ["docker", "tag", f"{IMAGE}:abc1234"],
        ["docker", "push", f"{IMAGE}:latest"],
    ]
    assert not smoked_file.exists()


# --- smoke ---------------------------------------------------------------------------------


def test_smoke_runs_the_smoke_command_without_a_shell_and_records_the_image(
    settings, smoked_file
):
    runner, _, out = runner_for(engine({
        re.compile(r"^docker run --rm "): Result("OK\n"),
    }))
    imagebuild.smoke(settings, runner, "abc1234")
    argv = argv_of(runner.history, "docker run --rm")
    assert argv[:4] == ["docker", "run", "--rm", "--env-file"]  # .env.example's values
    assert argv[4].startswith(tempfile.gettempdir()) and not Path(argv[4]).exists()
    assert argv[5:] == [f"{IMAGE}:abc1234",
                        "python", "-c", "from app.main import app; print('OK')"]
    assert "smoke: OK" in out.getvalue()
    assert imagebuild.was_smoked(IMAGE_ID)


def test_failed_smoke_shows_the_container_output_and_records_nothing(settings, smoked_file):
    runner, _, _ = runner_for(engine({
        re.compile(r"^docker run --rm "): Result(
            "", stderr="ModuleNotFoundError: No module named 'fastapi'\n", exited=1
        ),
    }))
    with pytest.raises(DeployError) as err:
        imagebuild.smoke(settings, runner, "abc1234")
    assert "smoke test failed" in err.value.message
    assert "ModuleNotFoundError: No module named 'fastapi'" in err.value.message
    assert not imagebuild.was_smoked(IMAGE_ID)


def test_smoke_of_a_missing_image_says_build_first(settings, smoked_file):
    runner, _, _ = runner_for(engine({
        re.compile(r"^docker image inspect --format '\{\{\.Id\}\}' "): Result(
            "", stderr="No such image", exited=1
        ),
    }))
    with pytest.raises(DeployError) as err:
        imagebuild.smoke(settings, runner, "abc1234")
    assert f"there is no local image {IMAGE}:abc1234" in err.value.message
    assert "inv build" in err.value.fix


# --- push ----------------------------------------------------------------------------------


def test_push_refuses_an_image_that_was_not_smoked(settings, smoked_file):
    imagebuild.record_smoked("sha256:" + "ef" * 32, f"{IMAGE}:other")  # another image passed
    runner, _, _ = runner_for(engine())
    with pytest.raises(DeployError) as err:
        imagebuild.push(settings, runner, "abc1234")
    assert "has not passed the smoke test" in err.value.message
    assert "inv smoke --version abc1234" in err.value.fix
    assert not [c for c in runner.history if c.startswith(("docker push", "docker login"))]


def test_push_after_smoke_pushes_version_then_latest(settings, smoked_file):
    imagebuild.record_smoked(IMAGE_ID, f"{IMAGE}:abc1234")
    runner, _, out = runner_for(engine())
    digest = imagebuild.push(settings, runner, "abc1234")
    pushes = [c for c in runner.history if c.startswith(("docker push", "docker tag"))]
    assert pushes == [
        f"docker push {IMAGE}:abc1234",
        f"docker tag {IMAGE}:abc1234 {IMAGE}:latest",
        f"docker push {IMAGE}:latest",
    ]
    assert digest == f"{IMAGE}@sha256:{'cd' * 32}"
    assert f"pushed {IMAGE}:abc1234 sha256:{'cd' * 32}" in out.getvalue()
    assert not [c for c in runner.history if c.startswith("docker login")]  # no credentials


def test_registry_login_passes_the_password_on_stdin_only(example_repo, smoked_file):
    settings = load_settings(example_repo, environ={
        "DEPLOY_REGISTRY_USER": "bob", "DEPLOY_REGISTRY_PASSWORD": PASSWORD,
    })
    imagebuild.record_smoked(IMAGE_ID, f"{IMAGE}:abc1234")
    runner, ctx, out = runner_for(engine(), secrets=settings.secrets, echo=True)
    imagebuild.push(settings, runner, "abc1234")
    login = argv_of(runner.history, "docker login")
    assert login == ["docker", "login", "--username", "bob", "--password-stdin", "127.0.0.1:5000"]
    assert all(PASSWORD not in command for command in runner.history)
    assert PASSWORD not in out.getvalue()
    stdin = [
        call.kwargs["in_stream"].getvalue()
        for call in ctx.run.call_args_list
        if call.args[0].startswith("docker login")
    ]
    assert stdin == [PASSWORD]
    others = [c for c in ctx.run.call_args_list if not c.args[0].startswith("docker login")]
    assert all(c.kwargs["in_stream"] is False for c in others)


def test_failed_login_does_not_leak_the_password(example_repo, smoked_file):
    settings = load_settings(example_repo, environ={
        "DEPLOY_REGISTRY_USER": "bob", "DEPLOY_REGISTRY_PASSWORD": PASSWORD,
    })
    imagebuild.record_smoked(IMAGE_ID, f"{IMAGE}:abc1234")
    runner, _, out = runner_for(engine({
        re.compile(r"^docker login\b"): Result(
            "", stderr=f"Error: bad password {PASSWORD}", exited=1
        ),
    }), secrets=settings.secrets)
    with pytest.raises(DeployError) as err:
        imagebuild.push(settings, runner, "abc1234")
    assert "registry login to 127.0.0.1:5000 failed" in err.value.message
    assert PASSWORD not in str(err.value)
    assert PASSWORD not in out.getvalue()
    assert not [c for c in runner.history if c.startswith("docker push")]


# --- the runner ----------------------------------------------------------------------------


def test_runner_quotes_argv_and_reports_failures():
    runner, ctx, out = runner_for({re.compile("."): Result("", stderr="nope\n", exited=3)},
                                 echo=True)
    with pytest.raises(DeployError) as err:
        runner.run(["echo", "a b", "$HOME"], hide=True)
    assert runner.history == ["echo 'a b' '$HOME'"]
    assert ctx.run.call_args.args[0] == "echo 'a b' '$HOME'"
    assert "exit 3" in err.value.message and "nope" in err.value.message
    assert "[local] $ echo 'a b' '$HOME'" in out.getvalue()
    assert runner.run(["false"], check=False).exited == 3


# --- git.resolve_version -------------------------------------------------------------------


def test_version_is_the_short_sha_on_a_clean_tree(example_repo):
    sha = git(example_repo, "rev-parse", "--short=7", "HEAD")
    assert deploy_git.resolve_version(example_repo) == sha
    assert deploy_git.resolve_version(example_repo, allow_dirty=False) == sha


def test_version_of_a_dirty_tree_is_stable_while_unchanged(example_repo):
    sha = git(example_repo, "rev-parse", "--short=7", "HEAD")
    (example_repo / "app" / "main.py").write_text("# changed\n")
    (example_repo / "new.txt").write_text("untracked\n")
    first = deploy_git.resolve_version(example_repo)
    assert re.fullmatch(rf"{sha}-dirty-[0-9a-f]{{8}}", first), first
    assert deploy_git.resolve_version(example_repo) == first
    (example_repo / "new.txt").write_text("untracked, changed\n")
    second = deploy_git.resolve_version(example_repo)
    assert second != first and second.startswith(f"{sha}-dirty-")
    refs.validate_tag(second)


def test_dirty_tree_is_refused_without_allow_dirty(example_repo):
    (example_repo / "app" / "main.py").write_text("# changed\n")
    with pytest.raises(DeployError) as err:
        deploy_git.resolve_version(example_repo, allow_dirty=False)
    assert "1 uncommitted change(s): app/main.py" in err.value.message
    assert "--allow-dirty" in err.value.fix


def test_explicit_version_wins_and_is_validated(example_repo):
    (example_repo / "app" / "main.py").write_text("# changed\n")
    assert deploy_git.resolve_version(example_repo, "v1.0", allow_dirty=False) == "v1.0"
    with pytest.raises(DeployError):
        deploy_git.resolve_version(example_repo, "bad tag")


def test_version_follows_new_commits(example_repo):
    first = deploy_git.resolve_version(example_repo)
    (example_repo / "app" / "main.py").write_text("# changed\n")
    commit_all(example_repo, "change")
    second = deploy_git.resolve_version(example_repo)
    assert second != first
    assert second == git(example_repo, "rev-parse", "--short=7", "HEAD")


def test_version_outside_git_is_a_clear_error(tmp_path):
    with pytest.raises(DeployError) as err:
        deploy_git.resolve_version(tmp_path)
    assert "cannot read the git commit" in err.value.message


def test_dirty_version_of_an_app_in_a_subdirectory_hashes_untracked_files(tmp_path):
    top = tmp_path / "mono"
    app = top / "services" / "app"
    app.mkdir(parents=True)
    (app / "main.py").write_text("print('hi')\n")
    git(top, "init", "-q")
    git(top, "config", "user.email", "tests@example.invalid")
    git(top, "config", "user.name", "Deploy Tests")
    commit_all(top, "init")
    (app / "new.py").write_text("one\n")
    first = deploy_git.resolve_version(app)
    assert deploy_git.resolve_version(app) == first
    (app / "new.py").write_text("two\n")  # same file list, other content: another image
    assert deploy_git.resolve_version(app) != first


@pytest.mark.slow
@pytest.mark.parametrize("xdg", ["", None])
def test_smoke_record_defaults_to_the_home_cache(tmp_path, xdg):
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env["HOME"] = str(tmp_path)
    if xdg is not None:
        env["XDG_CACHE_HOME"] = xdg
    proc = subprocess.run(
        [sys.executable, "-c", "import deploy.local.imagebuild as m; print(m.SMOKED_FILE)"],
        env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    assert proc.stdout.strip() == str(tmp_path / ".cache" / "deploy-toolkit" / "smoked.json")


def test_a_scratch_database_says_which_app_started_it():
    """Its labels: a scratch database, and the app directory whose check or tests started it
    (several apps on one laptop, or several test workers, each find their own)."""
    argv = docker.run_database("postgres:17", name="s1", env={"POSTGRES_DB": "app"}, port=5432,
                           app="/home/me/shop")
    assert argv[argv.index("--name") + 1] == "s1" and argv[-1] == "postgres:17"
    labels = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--label"]
    assert labels == ["deploy-toolkit.scratch=1", "deploy-toolkit.scratch.app=/home/me/shop"]
    assert "127.0.0.1::5432" in argv and ["--env", "POSTGRES_DB=app"] == \
        argv[argv.index("--env"):argv.index("--env") + 2]
