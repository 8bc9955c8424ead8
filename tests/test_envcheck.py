"""Env parity to the VM: app.env never gets DEPLOY_* keys; `fab deploy` refuses a
release whose .env.example names a key the VM's app.env lacks, before anything changes;
`fab env set KEY` adds it (value from stdin, never argv), `fab env-keys` lists keys only."""

from __future__ import annotations

import re
import stat
import subprocess
import sys

from conftest import assert_no_traceback, commit_all


def fab_stdin(app, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fabric", *args], cwd=app.repo,
                          env=app._env(None), input=stdin, capture_output=True, text=True,
                          timeout=300, check=False)


def test_setup_never_uploads_deploy_keys(app):
    with (app.repo / ".env").open("a") as f:  # .env is not committed (gitignored)
        f.write("DEPLOY_REGISTRY_PASSWORD=hunter2-secret\nDEPLOY_HEALTH_TIMEOUT=30\n")
    out = app.fab_ok("setup")
    assert "hunter2-secret" not in out
    text = app.vm("app.env").read_text()
    assert "DEPLOY_" not in text and "hunter2-secret" not in text
    values = app.release_env("app.env")  # as compose reads it (values quoted for it)
    assert (values["APP_SECRET"], values["MODEL_NAME"]) == ("test-secret", "test-model")
    assert stat.S_IMODE(app.vm("app.env").stat().st_mode) == 0o600


def test_deploy_refuses_a_release_whose_env_example_has_a_key_app_env_lacks(live, images):
    with (live.repo / ".env.example").open("a") as f:
        f.write("EMBEDDING_MODEL=all-minilm\nVECTOR_DIM=384\n")
    commit_all(live.repo, "the release reads two new variables")
    before = live.snapshot()

    proc = live.fab("deploy", f"--tag={images.v2}")
    assert proc.returncode == 1
    assert_no_traceback(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: the VM's app.env lacks EMBEDDING_MODEL, VECTOR_DIM, which "
                      ".env.example of this release declares; nothing was changed on the VM"]
    assert "fab env set EMBEDDING_MODEL (the value on stdin)" in proc.stderr
    assert "fab env set VECTOR_DIM" in proc.stderr and "fab setup" in proc.stderr
    assert live.snapshot() == before  # no pull, backup, migration, switch; the lock is free
    assert live.version() == {"version": "1", "revision": "0001"}

    for key, value in (("EMBEDDING_MODEL", "all-minilm $HOME 'q'"), ("VECTOR_DIM", "384")):
        proc = fab_stdin(live, value + "\n", "env", "set", key)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert value not in proc.stdout + proc.stderr
    values = live.release_env("app.env")
    assert values["VECTOR_DIM"] == "384" and values["APP_SECRET"] == "test-secret"
    assert stat.S_IMODE(live.vm("app.env").stat().st_mode) == 0o600
    keys = live.fab_ok("env-keys")
    assert "EMBEDDING_MODEL" in keys and "all-minilm" not in keys and "test-secret" not in keys

    live.deploy(images.v2)
    assert live.version() == {"version": "2", "revision": "0002"}
    # The app sees the value byte for byte: compose expanded neither $HOME nor the quotes.
    seen = live.fab_ok("exec", "--cmd", "printenv EMBEDDING_MODEL").splitlines()
    assert "all-minilm $HOME 'q'" in seen


def test_env_set_refuses_deploy_keys_and_bad_names(app):
    for key, message in (("DEPLOY_REGISTRY_PASSWORD", "is a setting of the deploy tool"),
                         ("1BAD", "is not a variable name"), ("A;B", "is not a variable name")):
        proc = fab_stdin(app, "x\n", "env", "set", key)
        assert proc.returncode == 1
        assert message in proc.stderr
        assert_no_traceback(proc)


def test_inv_deploy_refuses_before_tests_and_build(app):
    app.fab_ok("setup")
    with (app.repo / ".env.example").open("a") as f:
        f.write("EMBEDDING_MODEL=all-minilm\n")
    with (app.repo / ".env").open("a") as f:  # the laptop has it; the VM's app.env does not
        f.write("EMBEDDING_MODEL=all-minilm\n")
    commit_all(app.repo, "the release reads a new variable")
    proc = app.inv("deploy")
    assert proc.returncode == 1
    assert "error: the VM's app.env lacks EMBEDDING_MODEL" in proc.stderr
    # refused before the tests ran and the build started (neither printed anything)
    assert not re.search(r"^\[local\] (test|build) |^#\d+ | passed in ", proc.stdout, re.M)
    assert not app.vm(".deploy/lock").exists()
    assert_no_traceback(proc)
