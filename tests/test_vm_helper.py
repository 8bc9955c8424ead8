"""The rule "no `sh -c` script except through the VM helper", the helper's proxy, env-file,
settle, health-state-wait and swarm subcommands run under dash (the VM's /bin/sh) in a temporary
directory, and the proxy's health-wait decisions fed sequences of polls (no VM).
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

import deploy
from deploy.commands import proxy as pcmd
from deploy.commands import swarm as scmd
from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.core.runner import Result, Runner
from deploy.core.settings import Settings
from deploy.release import bluegreen
from deploy.vm.appenvfile import app_env_keys, set_key, unset_key
from deploy.vm.health import UpstreamWatch
from deploy.vm.steps import Vm
from deploy.vm.vm import describe_backup, parse_manifests

PACKAGE = Path(deploy.__file__).parent
DASH = shutil.which("dash") or "dash"
HELPER_SOURCE = PACKAGE / "vm" / "vm_helper.sh"

# --------------------------------------------------------------------------- the rule

# What may build an `sh -c` argv: the helper's own bootstrap, and commands the user wrote
# (`fab run CMD`, the app's migrate command in a one-off container, `fab exec`).
ALLOWED = {
    ("core/runner.py", "sh"),                 # the builder itself, used only by `fab run`
    ("cli/fabtasks.py", "run_"),              # `fab run CMD`
    ("commands/vm.py", "install_helper"),      # puts the helper in place
    ("commands/vm.py", "run_in_new_container"),  # the migrate command, `alembic downgrade`
    ("commands/vm.py", "migrate_then_current"),  # the migrate command, then alembic current
    ("commands/vm.py", "exec_in_service"),    # `fab exec`, `fab shell`, aliases
    ("commands/vm.py", "exec_in_container"),  # the same behind the proxy: the serving one
    ("local/secrets.py", "resolve"),          # a [secrets] command, run on the laptop
}


def _builds_sh_c(node: ast.AST) -> bool:
    """`sh(...)`/`runner.sh(...)`, a list or tuple with "sh", "-c" in a row, or a string
    that starts `sh -c `."""
    if isinstance(node, ast.Call):
        func = node.func
        return (isinstance(func, ast.Name) and func.id == "sh") or \
            (isinstance(func, ast.Attribute) and func.attr == "sh")
    if isinstance(node, ast.List | ast.Tuple):
        words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
        return any(a == "sh" and b == "-c" for a, b in zip(words, words[1:], strict=False))
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        return isinstance(first, ast.Constant) and str(first.value).startswith("sh -c ")
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and \
        node.value.startswith("sh -c ")


def shell_script_builders() -> set[tuple[str, str]]:
    """(module, innermost function) of every place in deploy/ that builds an `sh -c` argv."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module = path.relative_to(PACKAGE).as_posix()

        stack: list[tuple[ast.AST, str]] = [(tree, "<module>")]
        while stack:
            node, where = stack.pop()
            for child in ast.iter_child_nodes(node):
                name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) \
                    else where
                if _builds_sh_c(child):
                    found.add((module, name))
                stack.append((child, name))
    return found


def test_no_command_builder_writes_an_sh_c_script_except_the_allowed():
    found = shell_script_builders()
    assert found - ALLOWED == set(), (
        "these build an `sh -c` script: make it a subcommand of deploy/vm/vm_helper.sh instead: "
        f"{sorted(found - ALLOWED)}")
    assert ALLOWED - found == set(), f"stale allow-list entries: {sorted(ALLOWED - found)}"


def test_the_scan_sees_each_way_of_writing_one(tmp_path):
    for source in ('sh("a; b")', 'runner.sh("a; b")', '["sh", "-c", "a; b"]',
                   '("env", "sh", "-c", x)', 'f"sh -c {x}"', '"sh -c a"'):
        assert _builds_sh_c(ast.parse(source, mode="eval").body), source
    for source in ('["sh", HELPER, "x"]', '["bash", "-c"]', '"sh"', 'f"{x} sh -c"'):
        assert not _builds_sh_c(ast.parse(source, mode="eval").body), source


def helper_subcommands() -> set[str]:
    text = HELPER_SOURCE.read_text()
    dispatch = text[text.rindex('case $cmd in'):]
    return set(re.findall(r"^ {4}([a-z-]+)\)", dispatch, re.M))


PROXY_DIR = "/srv/.deploy-proxy"
BUILDERS = {
    "requirements": pcmd.requirements(PROXY_DIR),
    "write_base": pcmd.write_base(PROXY_DIR, "{", "}"),
    "assemble": pcmd.assemble(PROXY_DIR),
    "reload": pcmd.reload(PROXY_DIR),
    "wait_admin": pcmd.wait_admin(PROXY_DIR, 5),
    "set_route": pcmd.set_route(PROXY_DIR, "p", '{"a": "it\'s"}', "/srv/p", ["p.test"]),
    "set_upstream": pcmd.set_upstream(PROXY_DIR, "p", "p-app-2:8000"),
    "poll": pcmd.poll(PROXY_DIR, "abc", "p-app-1:8000", "h", "/health"),
    "ensure_network": pcmd.ensure_network(PROXY_DIR, "deploy-proxy"),
    "maintenance_on": pcmd.maintenance_on(PROXY_DIR, "p", 30, "{}"),
    "maintenance_off": pcmd.maintenance_off(PROXY_DIR, "p"),
    "maintenance_state": pcmd.maintenance_state(PROXY_DIR, "p"),
    "settle": pcmd.settle(["docker", "compose"], "app"),
    "env_keys": app_env_keys(),
    "set_key": set_key("APP_SECRET"),
    "unset_key": unset_key("APP_SECRET"),
    "list_manifests": cmd.list_manifests(),
    "task_last_health": scmd.task_last_health("t1"),
}


APP_COPY = {"settle", "env_keys", "set_key", "unset_key", "task_last_health", "list_manifests"}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builders_run_a_helper_subcommand_it_has(name):
    argv = BUILDERS[name]
    assert argv[0] == "sh" and argv[1].endswith(cmd.HELPER), argv
    assert argv[2] in helper_subcommands(), argv
    # the proxy's run the proxy_dir copy by its path (they run outside app_dir), the rest
    # the app's copy from app_dir
    expected = "" if name in APP_COPY else PROXY_DIR
    assert cmd.helper_dir(argv) == expected


def test_helper_dir_names_the_copy_to_install():
    assert cmd.helper_dir(cmd.helper("lock-read")) == ""
    assert cmd.helper_dir(cmd.helper_in("/srv/p", "proxy-reload")) == "/srv/p"
    assert cmd.helper_dir(["sh", "-c", "true"]) is None
    assert cmd.helper_dir(["docker", "ps"]) is None


# --------------------------------------------------------------------------- under dash


def dash(argv: list[str], cwd: Path, stdin: str | None = None, env: dict | None = None,
         timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a builder's argv as the VM would, under dash, with the helper installed in `cwd`
    (app_dir) or at its absolute path (proxy_dir) by the toolkit's own bootstrap."""
    directory = cmd.helper_dir(argv)
    assert directory is not None, argv
    install = subprocess.run([DASH, *cmd.install_helper(directory or ".")[1:]], cwd=cwd,
                             input=cmd.HELPER_TEXT, text=True, capture_output=True)
    assert install.returncode == 0, install.stderr
    return subprocess.run([DASH, *argv[1:]], cwd=cwd, input=stdin, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_env_keys_and_env_set_keep_values_on_the_vm_and_the_file_private(tmp_path):
    env = tmp_path / "app.env"
    env.write_text("export A=1\n  B = 2\n#C=3\nBB=4\nD='x'\n")
    env.chmod(0o644)
    assert dash(app_env_keys(), tmp_path).stdout.split() == ["A", "B", "BB", "D"]
    result = dash(set_key("B"), tmp_path, stdin="B='it''s $(touch pwned)'")
    assert result.returncode == 0, result.stderr
    assert env.read_text() == "export A=1\n#C=3\nBB=4\nD='x'\nB='it''s $(touch pwned)'\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert not (tmp_path / "pwned").exists()
    bad = dash(cmd.env_set("B.*"), tmp_path, stdin="x=1")
    assert bad.returncode == 1 and "not a variable name: B.*" in bad.stderr
    assert "BB=4" in env.read_text()
    with pytest.raises(DeployError):
        set_key("1X")
    (tmp_path / "empty").mkdir()
    assert dash(app_env_keys(), tmp_path / "empty").stdout == ""  # no app.env yet: no keys


def test_backups_are_listed_newest_first_with_their_manifests(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "20300101T000000Z-v2.sqlite3").write_bytes(b"SQLite format 3\0")
    (backups / "20300101T000000Z-v2.sqlite3.json").write_text(json.dumps(
        {"revision": "0001", "tag": "v2", "size": 2048}, indent=1))
    (backups / "20310101T000000Z-v3.dump").write_bytes(b"PGDMP")
    (backups / "20310101T000000Z-v3.dump.part").write_bytes(b"PG")
    result = dash(cmd.list_manifests(), tmp_path)
    assert result.returncode == 0, result.stderr
    found = parse_manifests(result.stdout)
    assert found == [("20310101T000000Z-v3.dump", None),
                     ("20300101T000000Z-v2.sqlite3", {"revision": "0001", "tag": "v2",
                                                      "size": 2048})]
    assert [describe_backup(*each) for each in found] == [
        "20310101T000000Z-v3.dump  (no manifest: `fab restore` needs --force-unverified)",
        "20300101T000000Z-v2.sqlite3  schema 0001, taken before v2 was deployed, 2 KB"]
    (tmp_path / "empty").mkdir()
    assert dash(cmd.list_manifests(), tmp_path / "empty").stdout == ""


def test_env_unset_removes_every_line_of_the_key_and_nothing_else(tmp_path):
    env = tmp_path / "app.env"
    env.write_text("export A=1\n  B = 2\nBB=4\nB=again\n")
    env.chmod(0o644)
    result = dash(unset_key("B"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert env.read_text() == "export A=1\nBB=4\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert dash(unset_key("A"), tmp_path).returncode == 0  # an `export` line too
    assert dash(unset_key("BB"), tmp_path).returncode == 0  # the last key: an empty file
    assert env.read_text() == ""
    missing = dash(unset_key("B"), tmp_path)
    assert missing.returncode == cmd.ENV_KEY_MISSING_EXIT
    bad = dash(cmd.env_unset("B.*"), tmp_path)
    assert bad.returncode == 1 and "not a variable name: B.*" in bad.stderr


def test_env_merge_keeps_the_vms_own_keys_and_names_what_changed(tmp_path):
    """`fab setup`'s merge: .env's lines replace or join app.env's, the VM's own keys stay;
    only names are printed, never values."""
    env = tmp_path / "app.env"
    env.write_text("A='1'\n# a note\nVM_ONLY='kept-value'\nB='old'\n")
    env.chmod(0o644)
    result = dash(cmd.env_merge(), tmp_path, stdin="A='1'\nB='new'\nC='added'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["kept VM_ONLY", "changed B"]
    assert env.read_text() == "A='1'\nB='new'\nC='added'\n# a note\nVM_ONLY='kept-value'\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    (tmp_path / "fresh").mkdir()  # no app.env yet: .env's lines, nothing kept
    fresh = dash(cmd.env_merge(), tmp_path / "fresh", stdin="A='1'")
    assert fresh.stdout == "" and (tmp_path / "fresh" / "app.env").read_text() == "A='1'\n"


def test_env_line_gives_back_any_value_env_line_wrote(tmp_path):
    """`fab env get` reads back what `fab env set` wrote: line breaks, quotes, `$`, `\\`."""
    from deploy.vm.contract import env_line, parse_env_line

    value = "one\ntwo 'q' \"d\" \\n $HOME ${X}\r\n\tend é"
    (tmp_path / "app.env").write_text(env_line("K", value) + env_line("KK", "x"))
    line = dash(cmd.env_line("K"), tmp_path)
    assert line.returncode == 0 and parse_env_line(line.stdout) == ("K", value)
    assert dash(cmd.env_line("NOPE"), tmp_path).returncode == cmd.ENV_KEY_MISSING_EXIT
    assert parse_env_line("export  FOO=bar # note\n") == ("FOO", "bar")


def test_proxy_base_routes_and_upstream_on_disk(tmp_path):
    proxy = tmp_path / "proxy dir"  # a space: every argument is its own word
    d = str(proxy)
    head, tail = pcmd.config_parts("off")
    compose = pcmd.compose_project("caddy:2", "net", "80", "443")
    result = dash(pcmd.write_base(d, head, tail), tmp_path, stdin=compose)
    assert result.returncode == 0, result.stderr
    assert (proxy / "compose.json").read_text() == compose
    assert dash(pcmd.assemble(d), tmp_path).returncode == 0
    assert json.loads((proxy / "conf/caddy.json").read_text())["apps"]["http"]["servers"][
        "web"]["routes"] == [pcmd.FALLBACK_ROUTE]

    # A route Caddy cannot take (no Caddy listens here): its own error shown, the previous
    # route file put back, the config rebuilt from what was there.
    first = json.dumps(pcmd.route("a", ["a.test"]))
    (proxy / "apps/a.json").write_text(first + "\n")
    changed = json.dumps(pcmd.route("a", ["b.test"]))
    refused = dash(pcmd.set_route(d, "a", changed, "/srv/a", ["b.test"]), tmp_path)
    assert refused.returncode == 1
    assert "Caddy refused the config (HTTP 000):" in refused.stderr
    assert "curl: (7)" in refused.stderr  # curl's own message: nothing listens
    assert (proxy / "apps/a.json").read_text() == first + "\n"
    routes = json.loads((proxy / "conf/caddy.json").read_text())["apps"]["http"]["servers"][
        "web"]["routes"]
    assert routes == [json.loads(first), pcmd.FALLBACK_ROUTE]
    # The same route again: nothing to load, nothing to refuse.
    assert dash(pcmd.set_route(d, "a", first, "/srv/a", ["a.test"]), tmp_path).returncode == 0
    # A new app's refused route is removed again.
    assert dash(pcmd.set_route(d, "b", changed, "/srv/b", ["b.test"]), tmp_path).returncode == 1
    assert not (proxy / "apps/b.json").exists()

    assert dash(pcmd.set_upstream(d, "a", "a-app-2:8000"), tmp_path).returncode == 0
    upstream = proxy / pcmd.upstream_path("a")
    assert upstream.read_text() == "a-app-2:8000"  # no newline: Caddy dials it as it is
    assert not upstream.with_name("a.tmp").exists()
    read = subprocess.run(pcmd.read_upstream(d, "b"), capture_output=True, text=True)
    assert read.returncode != 0 and read.stdout == ""  # no switch yet: no upstream
    escape = dash(pcmd.set_upstream(d, "../x", "y:1"), tmp_path)
    assert escape.returncode == 1 and "not a project name" in escape.stderr


def test_maintenance_files_go_in_page_last_and_out_page_first(tmp_path):
    proxy = tmp_path / "proxy"
    d = str(proxy)
    assert dash(pcmd.maintenance_state(d, "a"), tmp_path).stdout == ""  # off
    page = "<p>it's {back} $soon</p>\n"
    on = dash(pcmd.maintenance_on(d, "a", 45, '{"who": "me"}'), tmp_path, stdin=page)
    assert on.returncode == 0, on.stderr
    html = proxy / pcmd.maintenance_path("a", ".html")
    assert html.read_text() == page  # byte for byte, nothing expanded
    assert (proxy / pcmd.maintenance_path("a", ".retry")).read_text() == "45"
    assert oct(html.stat().st_mode & 0o777) == "0o644"  # Caddy's user reads it
    assert dash(pcmd.maintenance_state(d, "a"), tmp_path).stdout == 'on\n{"who": "me"}\n'
    assert sorted(p.name for p in html.parent.iterdir()) == ["a.html", "a.json", "a.retry"]
    assert dash(pcmd.maintenance_off(d, "a"), tmp_path).returncode == 0
    assert list(html.parent.iterdir()) == []
    assert dash(pcmd.maintenance_off(d, "a"), tmp_path).returncode == 0  # off again: fine
    escape = dash(pcmd.maintenance_on(d, "../x", 1, "{}"), tmp_path, stdin="x")
    assert escape.returncode == 1 and "not a project name" in escape.stderr


def test_a_config_change_waits_for_the_lock_and_says_so(tmp_path):
    proxy = tmp_path / "proxy"
    proxy.mkdir()
    holder = subprocess.Popen(["flock", str(proxy / "lock"), "sleep", "10"])
    try:
        time.sleep(0.3)
        started = time.monotonic()
        result = dash(pcmd.assemble(str(proxy)), tmp_path,
                      env={"DEPLOY_PROXY_LOCK_WAIT": "1"})
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1 and "the proxy config stayed locked for 1s" in result.stderr
    assert 0.9 < took < 5
    assert not (proxy / "conf/caddy.json").exists()


def test_requirements_wait_admin_poll_and_task_health_without_a_proxy(tmp_path):
    empty = tmp_path / "nothing-on-path"
    empty.mkdir()
    result = dash(pcmd.requirements(str(tmp_path / "p")), tmp_path, env={"PATH": str(empty)})
    assert (result.returncode, result.stdout) == (1, "missing on the VM: curl flock\n")
    assert dash(pcmd.requirements(str(tmp_path / "p")), tmp_path).returncode == 0
    started = time.monotonic()
    assert dash(pcmd.wait_admin(str(tmp_path / "p"), 1), tmp_path).returncode == 1
    assert time.monotonic() - started < 5
    gone = dash(pcmd.poll(str(tmp_path / "p"), "no-such-container-deploy-test", "x:1", "h",
                          "/health"), tmp_path)
    assert (gone.returncode, gone.stdout) == (0, "missing -\n")
    task = dash(scmd.task_last_health("no-such-task-deploy-test"), tmp_path)
    assert (task.returncode, task.stdout) == (0, "")


def test_settle_brings_up_every_service_but_the_web_one(tmp_path):
    calls = tmp_path / "calls"
    compose = tmp_path / "compose-standin"  # records how it is called (command construction)
    compose.write_text('#!/bin/sh\nif [ "$3" = config ]; then printf "%s\\n" $SERVICES; '
                       f'else echo "$*" >> {calls}; fi\n')
    compose.chmod(0o755)
    argv = pcmd.settle([str(compose), "--file", "c.yaml"], "app")
    assert dash(argv, tmp_path, env={"SERVICES": "app worker beat"}).returncode == 0
    assert calls.read_text() == "--file c.yaml up -d --no-deps --remove-orphans worker beat\n"
    calls.unlink()
    assert dash(argv, tmp_path, env={"SERVICES": "app"}).returncode == 0
    assert not calls.exists()  # only the web service: nothing to bring up


def test_compose_up_runs_to_its_end_when_the_session_goes_away(tmp_path):
    """The switch's `compose up` is cut off from the SSH session (fab killed, the network
    gone) between the old container's removal and the new one's start: it still starts the
    new one. Bare, the same command dies at its next line (SIGPIPE) with nothing started; a
    second `up` waits for the first instead of colliding with it. A stand-in docker (command
    construction): `up` prints a line, takes 0.5 s, prints another and logs its start and
    end."""
    bin_dir, log = tmp_path / "bin", tmp_path / "ups.log"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\necho "start $*" >> {log}\necho " Container app Recreated"\n'
        f'sleep 0.5\necho " Container app Started"\necho "end $*" >> {log}\n'
        f'case "$*" in *fail*) echo "no such service: fail" >&2; exit 3 ;; esac\n')
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    compose = ["docker", "compose", "--project-name", "p"]
    assert dash(cmd.helper("lock-read"), tmp_path).returncode == 0  # the helper in place

    def cut_off(argv: list[str]) -> subprocess.Popen:
        """argv under dash with its output pipes closed at once, as sshd closes a session."""
        proc = subprocess.Popen([DASH, *argv[1:]] if argv[0] == "sh" else argv, cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout and proc.stderr
        proc.stdout.close()
        proc.stderr.close()
        return proc

    bare = cut_off([*compose, "up", "-d", "--remove-orphans"])
    bare.wait(timeout=10)
    time.sleep(0.7)
    assert log.read_text().splitlines() == ["start compose --project-name p up -d "
                                            "--remove-orphans"]  # no end: it died

    log.unlink()
    first = cut_off(cmd.up(compose))
    deadline = time.monotonic() + 5
    while not (tmp_path / ".deploy" / "to-end.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # as a switch back comes after the first was cut off
    second = subprocess.run([DASH, *cmd.up(compose, "fail")[1:]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=10)
    first.wait(timeout=10)
    assert log.read_text().splitlines() == [
        "start compose --project-name p up -d --remove-orphans",
        "end compose --project-name p up -d --remove-orphans",
        "start compose --project-name p up -d --no-deps fail",
        "end compose --project-name p up -d --no-deps fail"]
    # the second's exit code and output, stdout and stderr, once it ended
    assert second.returncode == 3
    assert " Container app Started" in second.stdout and "no such service: fail" in \
        second.stdout
    assert sorted(p.name for p in (tmp_path / ".deploy").iterdir()) == ["bin"]


def test_a_retired_container_is_marked_until_gone_and_the_next_switch_waits_for_it(tmp_path):
    """retire returns at once and stops in the background; wait-retired waits for the marked
    containers among those it is given, not for the others, and drops marks of containers
    gone. A stand-in docker (command construction): a file per container; its stop takes
    0.5 s, or 10 s more for one named in `hangs`."""
    bin_dir, there = tmp_path / "bin", tmp_path / "containers"
    bin_dir.mkdir()
    there.mkdir()
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\ncmd=$1; shift\ncase $cmd in\n'
        f'  inspect) shift 2; [ -e "{there}/$1" ] ;;\n'
        f'  stop) i=0; for id in "$@"; do while grep -qx "$id" {tmp_path}/hangs 2>/dev/null '
        f'&& [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; done; sleep 0.5 ;;\n'
        f'  rm) shift; for id in "$@"; do rm -f "{there}/$id"; done ;;\n'
        f'  *) exit 2 ;;\nesac\n')
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    marks = tmp_path / ".deploy" / "retiring"
    for c in ("aa01", "bb02", "cc03", "ee05"):
        (there / c).touch()

    started = time.monotonic()
    assert dash(pcmd.retire(["aa01", "bb02"]), tmp_path, env=env).returncode == 0
    assert time.monotonic() - started < 0.4  # the stop goes on in the background
    assert sorted(p.name for p in marks.iterdir()) == ["aa01", "bb02"]
    (marks / "dd04").touch()  # a container gone without its mark removed (a killed stop)

    # cc03 is not retiring (an interrupted switch's container): it is not waited for
    result = dash(pcmd.wait_retired(["aa01", "cc03"], 10), tmp_path, env=env)
    assert (result.returncode, result.stdout) == (0, "")
    assert not (there / "aa01").exists() and (there / "cc03").exists()
    assert sorted(p.name for p in marks.iterdir()) == []  # bb02 went too, dd04 was stale

    (there / "ab07").touch()  # none named (before a restore stops the app): all marked
    assert dash(pcmd.retire(["ab07"]), tmp_path, env=env).returncode == 0
    result = dash(pcmd.wait_retired([], 10), tmp_path, env=env)
    assert (result.returncode, result.stdout) == (0, "")
    assert not (there / "ab07").exists() and not any(marks.iterdir())

    (tmp_path / "hangs").write_text("ee05\n")
    assert dash(pcmd.retire(["ee05"]), tmp_path, env=env).returncode == 0
    started = time.monotonic()
    result = dash(pcmd.wait_retired(["ee05"], 1), tmp_path, env=env)
    assert (result.returncode, result.stdout) == (1, "still there: ee05\n")
    assert time.monotonic() - started < 5  # (the helper counts whole seconds)
    assert [p.name for p in marks.iterdir()] == ["ee05"]

    bad = dash(pcmd.retire(["ff06", "../x"]), tmp_path, env=env)
    assert bad.returncode != 0 and "'../x' is not a container id" in bad.stderr
    assert [p.name for p in marks.iterdir()] == ["ee05"]  # nothing marked, nothing stopped
    (tmp_path / "hangs").unlink()  # the stop that hung ends (it would after 10 s)


def test_the_services_container_is_not_one_a_switch_retires(tmp_path):
    """Right after a blue/green switch the old container still stops in the background:
    what the service runs (its image, its health) is asked of the other one. Stand-ins of
    compose (two containers, short ids) and docker (command construction)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "compose").write_text('#!/bin/sh\n[ "$1" = ps ] && printf "aa11\\nbb22\\n"\n')
    (bin_dir / "docker").write_text('#!/bin/sh\n[ "$1" = inspect ] || exit 2\n'
                                    'eval "id=\\${$#}"\necho "sha256:$id ref-$id"\n')
    for name in ("compose", "docker"):
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    argv = cmd.running_image([str(bin_dir / "compose")], "app")
    assert dash(argv, tmp_path, env=env).stdout == "sha256:aa11 ref-aa11\n"
    marks = tmp_path / ".deploy" / "retiring"
    marks.mkdir(parents=True)
    (marks / "aa11ffee").touch()  # marked by its full id
    assert dash(argv, tmp_path, env=env).stdout == "sha256:bb22 ref-bb22\n"
    (marks / "bb22ffee").touch()
    assert dash(argv, tmp_path, env=env).stdout == ""  # none but retiring ones


# --------------------------------------------------------------------------- the health wait


def decide(*polls: tuple[str, str], passes: int = 3) -> tuple[str | None, UpstreamWatch]:
    watch = UpstreamWatch(passes=passes)
    verdict = None
    for state, code in polls:
        verdict = watch.poll(state, code)
        if verdict is not None:
            break
    return verdict, watch


def test_healthy_needs_the_state_and_passes_200s_in_a_row():
    assert decide(("starting", "502"), ("starting", "200"), ("healthy", "200"),
                  ("healthy", "200"))[0] == ""
    assert decide(("running", "200"), ("running", "200"), ("running", "200"))[0] == ""
    # a non-200 starts the count again
    assert decide(("healthy", "200"), ("healthy", "200"), ("healthy", "503"),
                  ("healthy", "200"), ("healthy", "200"))[0] is None
    assert decide(("healthy", "200"), passes=1)[0] == ""
    # 200s from a container Docker does not call healthy yet are not enough
    assert decide(*[("starting", "200")] * 5)[0] is None


def test_a_failed_state_fails_at_once_and_restarting_twice():
    for state in ("unhealthy", "exited", "dead", "missing"):
        verdict, watch = decide(("starting", "502"), (state, "-"), ("healthy", "200"))
        assert verdict == state
    assert decide(("", ""))[0] == "missing"  # nothing printed: no container
    assert decide(("restarting", "000"), ("starting", "502"))[0] is None
    assert decide(("restarting", "000"), ("starting", "502"), ("restarting", "000"))[0] == \
        "restarting"


def test_a_timeout_says_the_last_state_and_code():
    verdict, watch = decide(("starting", "000"), ("healthy", "503"))
    assert verdict is None
    assert watch.timed_out() == "timeout (healthy, 503 through the proxy)"
    assert UpstreamWatch().timed_out() == "timeout (none, - through the proxy)"


def settle(tmp_path: Path, *states: str, steady_polls: int = 15, timeout: float = 5
           ) -> tuple[int, str, int]:
    """health-state-wait under dash over stand-ins of compose and docker (command construction:
    what `docker inspect` says of the container, one state a call; `gone` for no container):
    (exit, output, how many polls it took)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    polls, script = tmp_path / "polls", tmp_path / "states"
    script.write_text("".join(f"{state}\n" for state in states))
    polls.write_text("")
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\n[ "$1" = inspect ] || exit 2\necho . >> {polls}\n'
        f'n=$(wc -l < {polls})\nstate=$(sed -n "${{n}}p" {script})\n'
        f'[ -n "$state" ] || state=$(tail -n 1 {script})\n'
        '[ "$state" != gone ] || exit 1\necho "$state sha256:ab 127.0.0.1:5000/app:v2"\n')
    (bin_dir / "compose").write_text('#!/bin/sh\n[ "$1" = ps ] && echo c0ffee\n')
    for name in ("docker", "compose"):
        (bin_dir / name).chmod(0o755)
    result = dash(cmd.health_state_wait([str(bin_dir / "compose")], "app", timeout,
                                        steady_polls), tmp_path,
                  env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    return result.returncode, result.stdout, len(polls.read_text().splitlines())


def test_without_the_proxy_the_container_wait_ends_on_dockers_verdict_or_a_steady_run(tmp_path):
    line = "{} sha256:ab 127.0.0.1:5000/app:v2\n"
    assert settle(tmp_path, "starting", "starting", "healthy") == (0, line.format("healthy"), 3)
    for state in ("unhealthy", "exited", "dead"):
        assert settle(tmp_path, "starting", state) == (0, line.format(state), 2)
    # no health check: running for `steady_polls` polls in a row, a restart starts it again
    assert settle(tmp_path, "running", steady_polls=3) == (0, line.format("running"), 3)
    assert settle(tmp_path, "running", "running", "starting", "running", "running", "running",
                  steady_polls=3) == (0, line.format("running"), 6)
    assert settle(tmp_path, "restarting", "running", "restarting") == \
        (0, line.format("restarting"), 3)
    # no container (yet, or gone): the wait goes on and its timeout says so, with exit 3
    # (3 s: on a busy machine the first poll alone has taken most of 1 s)
    started = time.monotonic()
    assert settle(tmp_path, "starting", "gone", timeout=3) [:2] == \
        (cmd.HEALTH_TIMEOUT_EXIT, "missing\n")
    assert time.monotonic() - started < 7
    assert settle(tmp_path, "gone", "healthy") == (0, line.format("healthy"), 2)


def test_the_container_wait_sleeps_until_docker_can_have_probed(tmp_path):
    """Docker probes a container `interval` after its start (or its last probe): the wait sleeps
    until then instead of polling every 0.1 s, and answers as soon as the verdict is in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    polls = tmp_path / "polls"
    polls.write_text("")
    started = time.time()
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + \
        f".{int(started % 1 * 1000):03d}Z"
    # healthy from 1 s after the start on (the probe's verdict), starting before it
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\n[ "$1" = inspect ] || exit 2\necho . >> {polls}\n'
        f'age=$(( $(date +%s%3N) - {int(started * 1000)} ))\n'
        'state=starting && [ "$age" -ge 1000 ] && state=healthy\n'
        f'echo "$state sha256:ab 127.0.0.1:5000/app:v2|{iso}|{{\\"Test\\":[\\"CMD\\"],'
        '\\"Interval\\":1000000000}"\n')
    (bin_dir / "compose").write_text('#!/bin/sh\n[ "$1" = ps ] && echo c0ffee\n')
    for name in ("docker", "compose"):
        (bin_dir / name).chmod(0o755)
    result = dash(cmd.health_state_wait([str(bin_dir / "compose")], "app", 10, 30), tmp_path,
                  env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    took = time.time() - started
    assert (result.returncode, result.stdout) == (0, "healthy sha256:ab 127.0.0.1:5000/app:v2\n")
    assert 1.0 <= took < 2.5
    # one poll at the start, one when the probe is due (and one more if it was still running);
    # polling every 0.1 s would take about 10
    assert len(polls.read_text().splitlines()) <= 3


class Polls:
    """A remote target that answers each command with the next scripted (exit, stdout)."""

    enters_dirs = True

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        self.answers = iter(answers)
        self.commands: list[str] = []

    def run(self, command: str, **kwargs) -> Result:
        self.commands.append(command)
        exited, stdout = next(self.answers)
        return Result(command, exited, stdout, "curl: (7) failed" if exited else "")


def polled(tmp_path: Path, answers: list[tuple[int, str]], timeout: float = 5.0):
    """proxy.wait_upstream over `answers` (the helper's upload first), and what it sent."""
    settings = Settings(root=tmp_path, image="127.0.0.1:5000/example", host="vm.invalid",
                        app_dir="/srv/app", proxy=True, proxy_host="app.test",
                        health_timeout=timeout)
    target = Polls([(0, ""), *answers])
    vm = Vm(settings, Runner(target, where="vm1", out=io.StringIO()))
    return bluegreen.wait_upstream(vm, "abc123", "p-app-2:8000"), target.commands


def test_the_wait_polls_through_the_shell_until_the_watch_decides(tmp_path):
    problem, sent = polled(tmp_path, [(0, "starting 502\n"), (0, "healthy 200\n")] +
                           [(0, "healthy 200\n")] * 2)
    assert problem == ""
    assert "mkdir -p /srv/.deploy-proxy/.deploy/bin" in sent[0]  # the proxy's copy, once
    assert all(" proxy-poll /srv/.deploy-proxy abc123 p-app-2:8000 http://app.test/health"
               in c for c in sent[1:]) and len(sent) == 5
    assert polled(tmp_path, [(0, "starting 502\n"), (0, "exited -\n")])[0] == "exited"
    failed = polled(tmp_path, [(0, "starting 502\n"), (2, "")])[0]
    assert failed == "the health poll failed (exit 2): curl: (7) failed"
    late = polled(tmp_path, [(0, "starting 000\n")] * 100, timeout=0.3)[0]
    assert late == "timeout (starting, 000 through the proxy)"


def test_the_proxy_wait_sleeps_while_docker_cannot_have_probed(tmp_path):
    """A poll that says when Docker's health check can run next ("starting CODE MS") is
    followed by a pause until shortly before then, not by a poll every 0.1 s: the passes
    through Caddy (three 200s in a row) are counted in the last polls before it, so that
    Docker's verdict ends the wait at once."""
    started = time.monotonic()
    problem, sent = polled(tmp_path, [(0, "starting 200 1000\n"), (0, "starting 200 350\n"),
                                      (0, "starting 200\n"), (0, "healthy 200\n")])
    assert problem == "" and len(sent) == 5
    # 1 s less the lead of four polls (0.4 s), then three more polls
    assert 0.6 <= time.monotonic() - started < 1.5


def test_after_a_switch_the_other_services_come_from_the_compose_file_the_check_rendered(
        tmp_path):
    """The check phase rendered the compose file with the release: settle brings up the
    services it names besides the web one (none: nothing runs), without asking compose for
    the list again; a release it did not render is asked on the VM."""
    from test_vm_commands import scripted_vm

    from deploy.release import bluegreen

    vm, _ = scripted_vm(tmp_path, {}, proxy=True, proxy_host="app.test")
    vm.rendered["v2"] = {"services": {"app": {}}}
    bluegreen.settle(vm, "v2")
    assert vm.runner.history == []
    vm.rendered["v2"] = {"services": {"app": {}, "worker": {}, "beat": {}}}
    bluegreen.settle(vm, "v2")
    (sent,) = vm.runner.history
    assert sent.endswith("up -d --no-deps --remove-orphans worker beat"), sent
    assert " settle " not in sent and " config" not in sent
    bluegreen.settle(vm, "v3")
    assert " settle app " in vm.runner.history[-1]
