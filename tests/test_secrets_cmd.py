"""Secrets from commands: `[secrets] KEY = "command"` runs on the laptop at `fab setup` and
`fab env-sync`; the value reaches the container byte for byte, on stdin only: never in any
output (with -v too), never on an argv the VM's (or this machine's) `ps` shows."""

from __future__ import annotations

import time
from pathlib import Path

from faultkit import PsSampler
from vmkit import output, unique

# Quotes of both kinds, $, a backslash, #, spaces, =: what an env file or a shell would mangle.
TRICKY = "s3cr'et \"dq\" $HOME ${X} \\back #hash = end"


def use_secret_command(repo: Path, secret_file: Path, key: str = "APP_SECRET") -> None:
    with open(repo / "deploy.toml", "a") as handle:
        handle.write(f'\n[secrets]\n{key} = "cat {secret_file}"\n')


def container_env(app, key: str) -> str:
    (cid,) = app.containers(service="app")
    proc = app.vm_docker("exec", cid, "printenv", key)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n")
    return proc.stdout[:-1]


def test_a_secret_from_a_command_reaches_the_container_and_nothing_else(
        app, images, tmp_path: Path) -> None:
    value = f"{TRICKY} {unique('tok-')}"
    secret_file = tmp_path / "secret"
    secret_file.write_text(value + "\n")  # as `pass show` prints it: one trailing newline
    use_secret_command(app.repo, secret_file)

    with PsSampler() as ps:
        setup = app.fab("setup", "-v")
        deploy = app.fab("deploy", f"--tag={images.v1}", "-v")
    assert setup.returncode == 0, output(setup)
    assert deploy.returncode == 0, output(deploy)
    assert container_env(app, "APP_SECRET") == value
    # (app.env's double-quoted form is compose's; python-dotenv reads `\$` differently)
    assert "APP_SECRET" in app.release_env("app.env")
    assert f"cat {secret_file}" in output(setup)  # -v shows the command, not its value
    for proc in (setup, deploy):
        assert value not in output(proc)
        assert "tok-" not in output(proc)
    assert ps.samples > 20, "the ps sampler did not run during the commands"
    leaked = [line for line in ps.lines if value.split()[-1] in line]
    assert not leaked, leaked[0]
    assert value not in app.vm(".deploy/history.jsonl").read_text()
    assert oct(app.vm("app.env").stat().st_mode & 0o777) == "0o600"

    # rotated: `fab env-sync` runs the command again and sets the new value on the VM
    rotated = f"{TRICKY} {unique('rot-')}"
    secret_file.write_text(rotated + "\n")
    with PsSampler() as ps:
        sync = app.fab("env-sync", "-v")
        again = app.fab("deploy", f"--tag={images.v2}")
    assert sync.returncode == 0, output(sync)
    assert again.returncode == 0, output(again)
    assert "APP_SECRET set in" in output(sync)
    assert rotated not in output(sync) + output(again)
    assert not [line for line in ps.lines if rotated.split()[-1] in line]
    assert container_env(app, "APP_SECRET") == rotated
    assert app.release_env("app.env")["MODEL_NAME"]  # the other keys stay


def test_a_failing_secret_command_stops_setup_with_its_own_error(app, images,
                                                                 tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    use_secret_command(app.repo, missing)
    proc = app.fab("setup")
    assert proc.returncode == 1, output(proc)
    assert "error: the command for secret APP_SECRET failed (exit 1)" in proc.stderr
    assert "No such file or directory" in proc.stderr  # cat's own message
    assert "nothing was sent to the VM" in proc.stderr
    assert not app.vm().exists()  # setup never reached the VM


def test_a_secret_with_a_bad_name_is_refused(app, tmp_path: Path) -> None:
    with open(app.repo / "deploy.toml", "a") as handle:
        handle.write('\n[secrets]\n"BAD-NAME" = "echo x"\n')
    started = time.monotonic()
    proc = app.fab("env-sync")
    assert proc.returncode == 1
    assert "'BAD-NAME' is not a variable name" in proc.stderr
    assert time.monotonic() - started < 60
