"""The check phase's one round trip: the helper's `facts` document (parsed from output captured
on a sandbox VM, and produced under dash here with a stand-in `docker`), and `release-files`,
which writes the release files only when they change and renders the compose file after."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.vm import contract
from deploy.vm.facts import parse_facts, parse_release_files

CAPTURED = Path(__file__).parent / "captured"
DASH = shutil.which("dash") or "dash"


def dash(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A builder's argv as the VM runs it, under dash, with the helper in place in `cwd`."""
    helper = cwd / cmd.HELPER
    helper.parent.mkdir(parents=True, exist_ok=True)
    helper.write_text(cmd.HELPER_TEXT)
    assert argv[0] == "sh"
    return subprocess.run([DASH, *argv[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=30, env={**os.environ, **(env or {})}, check=False)


# --------------------------------------------------------------------------- the parser


def test_the_facts_of_a_deployed_app_as_a_vm_printed_them():
    facts = parse_facts((CAPTURED / "facts-deployed.txt").read_text())
    assert facts.env_keys == ["APP_SECRET", "MODEL_NAME", "APP_PORT"]
    assert (facts.release_tag, facts.dotenv_tag, facts.compose) == ("b2", "b2", "v2")
    assert facts.project_dirs == ["/srv/bench-329cde30"]
    assert facts.dir_projects == ["bench-329cde30-cd4b3f79"]
    assert (facts.oneoffs, facts.http_tool) == ([], "curl")
    assert [json.loads(line)["tag"] for line in facts.history] == ["b2", "b1", "b2"]


def test_the_facts_of_a_fresh_app_dir_are_empty_but_the_vms_own():
    facts = parse_facts((CAPTURED / "facts-fresh.txt").read_text())
    assert (facts.env_keys, facts.release_tag, facts.dotenv_tag) == ([], "", "")
    assert (facts.project_dirs, facts.dir_projects, facts.history) == ([], [], [])
    assert (facts.compose, facts.http_tool) == ("v2", "curl")


@pytest.mark.parametrize("cut", [1, 5])
def test_a_document_cut_off_is_refused_not_half_read(cut):
    lines = (CAPTURED / "facts-deployed.txt").read_text().splitlines()
    with pytest.raises(DeployError) as err:
        parse_facts("\n".join(lines[:-cut]))
    assert "cut off" in err.value.message
    with pytest.raises(DeployError):
        parse_facts("")


def test_release_files_output_names_what_it_rewrote_and_what_the_command_said():
    assert parse_release_files("") == ([], "")
    assert parse_release_files("rewritten .env\n") == ([".env"], "")
    assert parse_release_files('rewritten .deploy/release.env\n@@fact output\n{"a": 1}\n') \
        == ([".deploy/release.env"], '{"a": 1}\n')


# --------------------------------------------------------------------------- under dash


@pytest.fixture
def docker_standin(tmp_path: Path) -> dict[str, str]:
    """A `docker` on PATH answering the questions `facts` asks (command construction only):
    the project's containers made in /srv/app, one one-off container, compose v2."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "compose version") exit 0 ;;\n'
        '  *oneoff=True*) echo 0123abcd ;;\n'
        '  *project.working_dir=*) echo app-1234 ;;\n'
        '  *"compose.project=app-1234"*) echo /srv/app; echo /srv/app ;;\n'
        "esac\n")
    docker.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_facts_under_dash_answer_every_question_and_no_value(tmp_path, docker_standin):
    app = tmp_path / "app"
    (app / ".deploy").mkdir(parents=True)
    (app / "app.env").write_text("export SECRET='s3cr3t value'\nPORT=8000\n# NOTE=x\n")
    (app / ".deploy" / "release.env").write_text("DEPLOY_IMAGE='r/app'\nDEPLOY_TAG='v7'\n")
    (app / ".env").write_text("DEPLOY_TAG='v6'\n")
    record = json.dumps({"tag": "v7", "message": "@@fact? $(no) 'quotes'"})
    (app / ".deploy" / "history.jsonl").write_text(f"not json\n{record}")  # no last newline
    out = dash(cmd.facts("DEPLOY_TAG", "app-1234", "/srv/app", "auto"), app, docker_standin)
    assert out.returncode == 0, out.stderr
    assert "s3cr3t" not in out.stdout and "8000" not in out.stdout
    facts = parse_facts(out.stdout)
    assert facts.env_keys == ["SECRET", "PORT"]
    assert (facts.release_tag, facts.dotenv_tag, facts.compose) == ("v7", "v6", "v2")
    assert (facts.project_dirs, facts.dir_projects) == (["/srv/app"], ["app-1234"])
    assert facts.oneoffs == ["0123abcd"]
    assert facts.history == ["not json", record]


IMAGES = "image sha256:aa 1000 r/app:v1\nused sha256:aa\n"
DF = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 10 5 5 50% /var\n"


@pytest.fixture
def slow_docker(tmp_path: Path) -> dict[str, str]:
    """A `docker` answering every question of `facts` with an image (command construction
    only). Asked for the project's directories, it waits until another question (the one-off
    containers, asked after it in the document) has been asked: only side by side can both
    be answered."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    seen = tmp_path / "asked-oneoffs"
    docker.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "compose version") exit 0 ;;\n'
        f'  *oneoff=True*) : > {seen}; echo 0123abcd ;;\n'
        '  *"compose.project=app-1234"*)\n'
        f'      i=0; while [ ! -e {seen} ] && [ $i -lt ${{TICKS:-50}} ]; do\n'
        '          sleep 0.1; i=$((i+1)); done\n'
        f'      [ -e {seen} ] && echo /srv/app || echo alone ;;\n'
        '  *project.working_dir=*) echo app-1234 ;;\n'
        "  \"info --format {{.DockerRootDir}}\") echo /var ;;\n"
        '  "image ls -q --no-trunc r/app") echo sha256:aa ;;\n'
        '  "image inspect --format"*) echo "image sha256:aa 1000 r/app:v1" ;;\n'
        '  "ps -aq --no-trunc") echo c1 ;;\n'
        '  "inspect --format used {{.Image}} c1") echo "used sha256:aa" ;;\n'
        "esac\n")
    docker.chmod(0o755)
    df = bin_dir / "df"
    df.write_text(f"#!/bin/sh\n[ \"$*\" = '-Pk /var' ] && printf '%s' '{DF}'\n")
    df.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_facts_with_an_image_bring_the_pulls_disk_figures_asked_side_by_side(tmp_path,
                                                                               slow_docker):
    app = tmp_path / "app"
    app.mkdir()
    out = dash(cmd.facts("DEPLOY_TAG", "app-1234", "/srv/app", "auto", "r/app"), app,
               slow_docker)
    assert out.returncode == 0, out.stderr
    facts = parse_facts(out.stdout)
    assert facts.project_dirs == ["/srv/app"], "the docker questions were asked one by one"
    assert (facts.oneoffs, facts.dir_projects, facts.compose) == (["0123abcd"], ["app-1234"],
                                                                  "v2")
    assert (facts.docker_df, facts.app_images) == (DF, IMAGES)
    without = parse_facts(dash(cmd.facts("DEPLOY_TAG", "app-1234", "/srv/app", "v2"), app,
                               slow_docker).stdout)
    assert (without.docker_df, without.app_images) == (None, None)  # not asked: not there


def test_facts_whose_files_cannot_be_written_are_asked_again_in_order(tmp_path, slow_docker):
    """A full disk (here: a temporary directory that is not there) cuts the side-by-side
    answers short: each is asked again, one after the other, and the document is whole."""
    app = tmp_path / "app"
    app.mkdir()
    mktemp = tmp_path / "bin" / "mktemp"
    mktemp.write_text(f"#!/bin/sh\necho {tmp_path}/gone\n")
    mktemp.chmod(0o755)
    slow_docker["TICKS"] = "5"  # it waits in vain: not long
    out = dash(cmd.facts("DEPLOY_TAG", "app-1234", "/srv/app", "auto", "r/app"), app,
               slow_docker)
    facts = parse_facts(out.stdout)
    # one by one, the directories' question waits for the one-offs' in vain
    assert facts.project_dirs == ["alone"]
    assert (facts.oneoffs, facts.compose) == (["0123abcd"], "v2")
    assert (facts.docker_df, facts.app_images) == (DF, IMAGES)
    assert not (tmp_path / "gone").exists()


def test_facts_say_when_the_vm_has_no_compose_and_no_http_tool(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sed", "tail", "awk", "sort", "cat"):  # and no docker, curl, wget, python3
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    out = dash(cmd.facts("DEPLOY_TAG", "p", "/srv/p", "auto"), tmp_path,
               {"PATH": str(bin_dir)})
    facts = parse_facts(out.stdout)
    assert (facts.compose, facts.http_tool) == ("none", "")
    given = dash(cmd.facts("DEPLOY_TAG", "p", "/srv/p", "v1"), tmp_path,
                 {"PATH": str(bin_dir)})
    assert parse_facts(given.stdout).compose == "v1"  # compose_command set: not detected


def release_texts(tag: str) -> tuple[str, str]:
    release = contract.env_text({"DEPLOY_IMAGE": "r/app", "DEPLOY_TAG": tag})
    return release, contract.env_text({"COMPOSE_PROJECT_NAME": "app-1234"}) + release


def test_release_files_write_only_what_changed_and_build_dotenv_on_the_vm(tmp_path):
    app_env = "A='it''s'\nB=\"x\\ny\"\n\nexport C=3\n"
    (tmp_path / "app.env").write_text(app_env)
    release, tail = release_texts("v1")
    first = dash(cmd.release_files(release, tail), tmp_path)
    assert first.returncode == 0, first.stderr
    assert parse_release_files(first.stdout) == ([".deploy/release.env", ".env"], "")
    # what the laptop wrote before (app.env's text, read back, plus the tail): byte for byte
    assert (tmp_path / ".env").read_text() == app_env + tail
    assert (tmp_path / ".deploy/release.env").read_text() == release
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert not (tmp_path / ".deploy/release.yaml").exists()
    again = dash(cmd.release_files(release, tail), tmp_path)
    assert (again.returncode, again.stdout) == (0, "")  # nothing changed: nothing written
    release2, tail2 = release_texts("v2")
    override = contract.release_override("app", "r/app:v2")
    switched = dash(cmd.release_files(release2, tail2, override), tmp_path)
    assert parse_release_files(switched.stdout)[0] == [
        ".deploy/release.env", ".deploy/release.yaml", ".env"]
    assert (tmp_path / ".deploy/release.yaml").read_text() == override


def test_release_files_then_run_the_command_and_pass_on_its_failure(tmp_path):
    (tmp_path / "app.env").write_text("A=1\n")
    release, tail = release_texts("v1")
    ok = dash(cmd.release_files(release, tail, then=["echo", '{"services": {}}']), tmp_path)
    assert (ok.returncode, parse_release_files(ok.stdout)) == (
        0, ([".deploy/release.env", ".env"], '{"services": {}}\n'))
    failed = dash(cmd.release_files(release, tail, then=["sh", "-c", "echo bad >&2; exit 3"]),
                  tmp_path)
    assert (failed.returncode, failed.stderr) == (3, "bad\n")
    assert "@@fact output" in failed.stdout


def test_the_record_appends_the_history_and_writes_the_release_files(tmp_path):
    (tmp_path / "app.env").write_text("A=1\n")
    release, tail = release_texts("v3")
    line = json.dumps({"tag": "v3", "message": "it's $(x)"})
    out = dash(cmd.record_release(line, release, tail), tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / ".deploy/history.jsonl").read_text() == line + "\n"
    assert (tmp_path / ".env").read_text() == "A=1\n" + tail
