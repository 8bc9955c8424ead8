"""What an adversarial campaign did to the VM's env file and app directory through the
settings and `fab env`, on sandbox VM vm1 (each app its own app_dir).

Each test's docstring: fault | what the user saw | exit | state left.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import assert_no_traceback, output
from vmkit import App, unique

from deploy.core.dotenvfile import read_env_file

# A value compose's env-file parser could get wrong: newlines, a carriage return, both quote
# kinds, a backslash before n, `$` before a name and a brace, `#`, `=`, a tab, non-ASCII.
AWKWARD = "line one\nline 'two' \"2\"\r\n\\n $HOME ${X} #no = comment\tend é\n"


def fab_stdin(app: App, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`fab ARGS` in the app's repo with `data` on stdin (as `printf ... | fab env set K`)."""
    return subprocess.run([sys.executable, "-m", "fabric", *args], cwd=app.repo,
                          env=app._env(None), input=data, capture_output=True, timeout=600,
                          check=False)


def test_setup_again_keeps_keys_set_on_the_vm(app):
    """`fab setup` after `fab env set` | before: the VM-only keys were gone, no warning; now:
    `kept … (only on the VM)` and `updated from .env: KEY` (names, never values) | 0 |
    app.env: .env's keys updated, the VM's own kept (mode 0600)."""
    app.fab_ok("setup")
    for key, value in (("VM_ONLY", "set-on-the-vm-123"), ("MODEL_NAME", "vm-model-name")):
        proc = fab_stdin(app, f"{value}\n".encode(), "env", "set", key)
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    env_file = app.repo / ".env"
    env_file.write_text(env_file.read_text() + "NEW_LOCAL=from-the-laptop\n")

    out = app.fab_ok("setup")

    values = app.release_env("app.env")
    assert values["VM_ONLY"] == "set-on-the-vm-123"  # kept
    assert values["NEW_LOCAL"] == "from-the-laptop"  # added
    assert values["MODEL_NAME"] == read_env_file(env_file)["MODEL_NAME"]  # .env wins, and
    assert "app.env: updated from .env: MODEL_NAME (the VM had other values)" in out, out
    assert "app.env: kept VM_ONLY (only on the VM, not in .env)" in out, out  # says so
    assert "vm-model-name" not in out and "set-on-the-vm-123" not in out, out
    assert app.release_env(".env")["VM_ONLY"] == "set-on-the-vm-123"  # what compose reads
    assert app.vm("app.env").stat().st_mode & 0o777 == 0o600


def test_env_set_keeps_a_multi_line_value_byte_for_byte(live):
    """`printf '%s\\n' "$MULTI" | fab env set V_NL` | before: `V_NL set`, only the first line
    stored | 0 | app.env holds every byte; `fab env get V_NL` masks it, `--show` prints it,
    the container's environment has it exactly."""
    proc = fab_stdin(live, AWKWARD.encode() + b"\n", "env", "set", "V_NL")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()

    masked = fab_stdin(live, b"", "env", "get", "V_NL")
    assert masked.returncode == 0, masked.stderr.decode()
    assert b"line one" not in masked.stdout and b"V_NL" in masked.stdout
    shown = fab_stdin(live, b"", "env", "get", "V_NL", "--show")
    assert shown.returncode == 0, shown.stderr.decode()
    assert shown.stdout == AWKWARD.encode() + b"\n"  # the value plus the line's end

    assert live.vm_compose("up", "-d", "--wait").returncode == 0
    (cid,) = live.containers(service="app")
    seen = live.vm_docker("exec", cid, "python", "-c",
                          "import os, sys; sys.stdout.write(repr(os.environ['V_NL']))")
    assert seen.stdout == repr(AWKWARD), seen.stdout + seen.stderr

    gone = fab_stdin(live, b"", "env", "unset", "V_NL")
    assert gone.returncode == 0, gone.stdout.decode() + gone.stderr.decode()
    assert "V_NL removed from" in gone.stdout.decode()
    assert "V_NL" not in live.vm("app.env").read_text() and "line one" not in \
        live.vm("app.env").read_text()
    again = fab_stdin(live, b"", "env", "unset", "V_NL")
    assert again.returncode == 1 and "V_NL is not set" in again.stdout.decode() + \
        again.stderr.decode()


def test_env_get_of_a_missing_key_is_one_error(app):
    """`fab env get NOPE` | (new task) | 1 | nothing changed."""
    app.fab_ok("setup")
    proc = fab_stdin(app, b"", "env", "get", "NOPE")
    text = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 1
    assert "error: NOPE is not set" in text and "fab env set NOPE" in text, text


def test_app_dir_naming_another_apps_directory_through_a_symlink_is_refused(make_app):
    """app_dir = a symlink to another app's directory | before: a second compose project in
    that directory | 1, `error: app_dir … is … on the VM` | nothing written there."""
    first = make_app()
    first.fab_ok("setup")
    before = first.snapshot()
    link = f"/srv/{unique('t-link-')}"
    assert first.vm_run("ln", "-s", first.app_dir, link, cwd="/").returncode == 0
    try:
        second = make_app()
        second.env["DEPLOY_APP_DIR"] = link
        proc = second.fab("setup")
        text = output(proc)
        assert proc.returncode == 1, text
        assert_no_traceback(proc)
        assert f"error: app_dir {link} is {first.app_dir} on the VM" in text, text
        assert "fix:" in text
        assert first.snapshot() == before
        assert not first.vm(".deploy/lock").exists()
    finally:
        first.vm_run("rm", "-f", link, cwd="/")


def test_compose_file_in_a_subdirectory_with_a_space_is_one_error(app):
    """compose_file = "sub dir/compose.yaml" | before: a paramiko traceback | 1, one
    `error: setting 'compose_file' …` + fix | nothing on the VM."""
    sub = app.repo / "sub dir"
    sub.mkdir()
    (sub / "compose.yaml").write_text((app.repo / "compose.yaml").read_text())
    proc = app.fab("setup", env={"DEPLOY_COMPOSE_FILE": "sub dir/compose.yaml"})
    text = output(proc)
    assert proc.returncode == 1, text
    assert_no_traceback(proc)
    assert "error: setting 'compose_file'" in text and "fix:" in text, text
    assert not app.vm().exists()


def test_a_refused_lock_is_one_error_line(live, images):
    """a deploy while another holds the lock | before: raw holder.json and `lease-age 56`
    lines, then the message | 1, one `error:` + fix | the other's lock untouched."""
    lock = live.vm(".deploy/lock")
    lock.mkdir()
    (lock / "holder.json").write_text('{"holder": "eve@elsewhere", "action": "deploy", '
                                      '"tag": "x", "pid": 1}\n')
    (lock / "lease").write_text("")
    try:
        proc = live.fab("deploy", f"--tag={images.v2}")
        text = output(proc)
        assert proc.returncode == 1, text
        assert "holder.json" not in text and "lease-age" not in text, text
        assert '{"holder"' not in text, text
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "locked by another deploy" in errors[0], text
        assert (lock / "holder.json").exists()
    finally:
        live.fab_ok("unlock", "--force", "--yes")
