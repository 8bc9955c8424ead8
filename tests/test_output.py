"""What a user sees: by default one line per phase and no command lines; with -v
(`--verbose`, `--echo`, DEPLOY_VERBOSE=1) every command, secrets redacted; a dry run always
prints every command; nothing a remote tool prints reaches the terminal as escape sequences.

The first half needs no VM (a mocked Invoke context for the runner, a fake channel for the
remote shell's stream); the second runs `fab` against the sandbox VM as a user does.
"""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from invoke import MockContext
from invoke import Result as InvokeResult

from deploy.core.errors import DeployError
from deploy.core.runner import Runner, redact, set_verbose, strip_escapes, verbose_from_env
from deploy.vm.phases import PhaseLine
from deploy.vm.shell import _Stream

SECRET = "s3cr3t-Pa55"
COMMAND = ["docker", "login", "--username", "bob", f"--token={SECRET}", "reg"]


def runner(**kwargs) -> tuple[Runner, io.StringIO]:
    out = io.StringIO()
    ctx = MockContext(run={re.compile(".*"): InvokeResult(stdout="ok\n")})
    return Runner(ctx, out=out, secrets=[SECRET], clock=lambda: 0.0, **kwargs), out


def test_default_output_has_no_command_lines():
    r, out = runner(echo=False)
    r.run(COMMAND, hide=True)
    r.run(["true"], quiet=True)
    assert "$ " not in out.getvalue()
    assert out.getvalue() == ""


def test_verbose_prints_every_command_with_secrets_redacted():
    r, out = runner(echo=True)
    r.run(COMMAND, hide=True)
    r.run(["sh", ".deploy/bin/helper-x", "lock-read"], quiet=True)
    printed = out.getvalue()
    assert "[local] $ docker login --username bob --token=*** reg" in printed
    assert "[local] $ sh .deploy/bin/helper-x lock-read" in printed  # quiet ones too
    assert SECRET not in printed


def test_a_failure_shows_the_commands_own_error_redacted_at_every_level():
    for echo in (False, True):
        out = io.StringIO()
        ctx = MockContext(run={re.compile(".*"): InvokeResult(
            stderr=f"denied for {SECRET}\n", exited=1)})
        r = Runner(ctx, out=out, secrets=[SECRET], echo=echo)
        with pytest.raises(DeployError) as err:
            r.run(COMMAND, hide=True, what="registry login failed")
        assert "denied for ***" in err.value.message and SECRET not in err.value.message
        assert SECRET not in out.getvalue()


def test_redaction_replaces_whole_values_only():
    """a secret `x` | before: `it takes effect at the ne***t deploy` | now: a secret shorter
    than 8 characters is never redacted (the settings refuse one, `fab env set` warns), and a
    longer one only where it stands alone, not inside a longer word."""
    say = "x set; it takes effect at the next deploy"
    assert redact(say, ["x"]) == say
    assert redact("token=abcdefgh1 abcdefgh1x xabcdefgh1 'abcdefgh1'\n",
                  ["abcdefgh1"]) == "token=*** abcdefgh1x xabcdefgh1 '***'\n"
    assert redact("a line\nb (two) used", ["a line\nb (two)"]) == "*** used"
    out = io.StringIO()
    Runner(MockContext(), out=out, secrets=["x", "ab"]).say(say)
    assert out.getvalue() == f"[local] {say}\n"


def test_a_dry_run_prints_every_command_even_without_verbose():
    r, out = runner(echo=False, dry_run=True)
    r.run(COMMAND)
    r.run(["cat", "app.env"], quiet=True)
    printed = out.getvalue()
    assert "$ docker login --username bob --token=*** reg" in printed
    assert "$ cat app.env" in printed
    assert SECRET not in printed


def test_verbose_comes_from_the_flag_invokes_echo_or_the_environment(monkeypatch):
    monkeypatch.delenv("DEPLOY_VERBOSE", raising=False)
    assert not verbose_from_env()
    set_verbose(False, SimpleNamespace(config=SimpleNamespace(run=SimpleNamespace(echo=False))))
    assert not verbose_from_env()
    set_verbose(False, SimpleNamespace(config=SimpleNamespace(run=SimpleNamespace(echo=True))))
    assert verbose_from_env()  # `inv --echo` / `fab --echo`
    monkeypatch.delenv("DEPLOY_VERBOSE")
    set_verbose(True)
    assert verbose_from_env()  # a task's --verbose
    assert Runner(None).echo
    monkeypatch.setenv("DEPLOY_VERBOSE", "0")
    assert not Runner(None).echo


def test_escape_sequences_are_stripped():
    raw = "\x1b[2K\x1b[1G\x1b[32mapp-1  |\x1b[0m INFO started\r\n\x1b]0;title\x07plain"
    assert strip_escapes(raw) == "app-1  | INFO started\nplain"


def test_the_remote_stream_echoes_and_keeps_no_escape_bytes(capsys):
    import sys

    stream = _Stream("__mark__", sys.stdout)
    for chunk in (b"\x1b[2Kapp-1  | one\n\x1b[", b"2Kapp-1  | two\n", b"__mark__ 0\n"):
        stream.feed(chunk)
    assert stream.done and stream.exit_code == 0
    assert stream.text == "app-1  | one\napp-1  | two\n"
    assert "\x1b" not in capsys.readouterr().out


class FakeVm:
    def __init__(self) -> None:
        self.out = io.StringIO()
        self.runner = Runner(None, where="vm1", out=self.out, echo=False)


def test_a_release_prints_its_phases_as_one_line():
    vm = FakeVm()
    with PhaseLine(vm, "v2", "v1") as rel:
        rel.note("lock")
        with rel.phase("pull"):
            pass
        with rel.phase("backup", timed=False) as found:
            found.result = "backups/x.sqlite3"
        with rel.phase("migrate") as found:
            found.result = "0001→0002"
        rel.note("recorded")
    lines = vm.out.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\[vm1\] lock · pull 0\.\ds · backup backups/x\.sqlite3 · "
                        r"migrate 0001→0002 0\.\ds · recorded", lines[0]), lines


def test_a_phase_is_named_while_it_runs_and_other_output_breaks_the_line():
    vm = FakeVm()
    with PhaseLine(vm, "v2", "v1") as rel:
        rel.note("lock")
        with rel.phase("migrate") as found:
            assert vm.out.getvalue() == "[vm1] lock · migrate"  # the step under way, live
            vm.runner.say("warning: something to read")
            found.result = "0001→0002"
        with rel.phase("switch"):
            pass
    lines = vm.out.getvalue().splitlines()
    assert lines[:2] == ["[vm1] lock · migrate", "[vm1] warning: something to read"], lines
    assert re.fullmatch(r"\[vm1\] migrate 0001→0002 0\.\ds · switch 0\.\ds", lines[2]), lines
    assert len(lines) == 3 and vm.out.getvalue().endswith("\n")


def test_ctrl_c_or_a_lost_connection_in_a_phase_says_what_still_serves():
    from deploy.vm.shell import ConnectionLost

    vm = FakeVm()
    with pytest.raises(DeployError) as err:
        with PhaseLine(vm, "v2", "v1") as rel, rel.phase("migrate"):
            raise KeyboardInterrupt
    assert err.value.message.startswith("interrupted during migrate of v2; v1 is still serving "
                                        "and the lock was released")
    assert err.value.exit_code == 130
    assert vm.out.getvalue() == "[vm1] migrate cut short\n"
    with pytest.raises(DeployError) as err:
        with PhaseLine(vm, "v2", "v1") as rel, rel.phase("pull"):
            raise ConnectionLost("lost", "fix", "vm1", "no answer for 30s")
    assert "the SSH connection to vm1 was lost (no answer for 30s) during pull of v2; v1 is " \
           "still serving" in err.value.message
    with pytest.raises(DeployError, match="nope"):
        with PhaseLine(vm, "v2", "v1") as rel, rel.phase("check"):
            raise DeployError("nope", "fix")
    assert vm.out.getvalue().splitlines()[-1] == "[vm1] check failed"


# --------------------------------------------------------------------------- on the VM


def test_fab_default_output_is_phases_verbose_shows_commands_logs_have_no_escapes(
        live, images):
    out = live.deploy(images.v2)
    assert not re.search(r"^\[[^]]+\] \$ ", out, re.M), out  # no command lines by default
    phases = [line for line in out.splitlines() if " · " in line]
    assert len(phases) == 1, out
    for name in ("lock", "check", "pull", "backup", "migrate", "switch", "healthy", "recorded"):
        assert name in phases[0], phases[0]
    assert f"done: {images.image}:{images.v2} on " in out
    assert "cd /srv" not in out

    verbose = live.fab_ok("rollback", f"--tag={images.v1}", "--verbose")
    commands = re.findall(r"^\[[^]]+\] \$ (.*)$", verbose, re.M)
    assert any(" pull " in c for c in commands) and any(" up -d" in c for c in commands)
    assert any("lock-acquire" in c for c in commands)  # the quiet bookkeeping ones too
    assert not any(c.startswith("cd ") for c in commands), commands  # entered once, no prefix
    assert live.serving_image() == f"{images.image}:{images.v1}"

    echo = live.fab_ok("--echo", "status")  # Fabric's own --echo is -v as well
    assert re.search(r"^\[[^]]+\] \$ ", echo, re.M), echo

    logs = live.fab("logs", "--tail=50")
    assert logs.returncode == 0
    assert "\x1b" not in logs.stdout + logs.stderr
