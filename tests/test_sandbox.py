"""The sandbox deploy target, against the real thing: engine, registry, base image and sshd.

The session fixture calls `up()`, which is a no-op when `.ci/setup` already brought it up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import paramiko
import pytest

from deploy.errors import DeployError
from sandbox import box as sbx


@pytest.fixture(scope="session")
def sb() -> sbx.Sandbox:
    """The sandbox, up."""
    return sbx.up()


def _pids(sb: sbx.Sandbox) -> dict[str, int | None]:
    """pid of every process the sandbox recorded."""
    return {p.name: sbx._read_pid(p) for p in sorted(sb.state_dir.glob("*.pid"))}


def _client(known_hosts: Path) -> paramiko.SSHClient:
    """A paramiko client that trusts only `known_hosts` and refuses unknown host keys."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _connect(client: paramiko.SSHClient, sb: sbx.Sandbox) -> None:
    client.connect(
        sb.ssh_host,
        port=sb.ssh_port,
        username=sb.ssh_user,
        key_filename=str(sb.key_file),
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )


# --------------------------------------------------------------------------- pure parts


def test_config_derives_paths_from_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_SANDBOX_DIR", str(tmp_path))
    monkeypatch.setenv("DEPLOY_SANDBOX_SSH_PORT", "2299")
    cfg = sbx.sandbox()
    assert cfg.state_dir == tmp_path
    assert cfg.ssh_port == 2299
    assert (cfg.registry, cfg.ssh_host, cfg.ssh_user) == ("127.0.0.1:5000", "127.0.0.1", "root")
    assert cfg.key_file == tmp_path / "id_ed25519"
    assert cfg.known_hosts == tmp_path / "known_hosts"
    assert cfg.sshd_log == tmp_path / "sshd.log"
    assert not tmp_path.joinpath("id_ed25519").exists()  # no side effects


def test_bad_port_is_a_deploy_error(monkeypatch):
    monkeypatch.setenv("DEPLOY_SANDBOX_SSH_PORT", "twenty-two")
    with pytest.raises(DeployError) as err:
        sbx.sandbox()
    assert "DEPLOY_SANDBOX_SSH_PORT" in err.value.message and err.value.fix


def test_known_hosts_uses_bracketed_form_for_other_ports():
    key = "ssh-ed25519 AAAAkey deploy-sandbox-host"
    assert sbx.known_hosts_line("127.0.0.1", 2222, key) == "[127.0.0.1]:2222 ssh-ed25519 AAAAkey"
    assert sbx.known_hosts_line("10.0.0.5", 22, key) == "10.0.0.5 ssh-ed25519 AAAAkey"


def test_sshd_config_is_private_and_key_only(tmp_path):
    cfg = sbx.Sandbox(state_dir=tmp_path)
    text = sbx.sshd_config(cfg, "127.0.0.1", 2222, tmp_path / "sshd.pid")
    lines = set(text.splitlines())
    for expected in (
        "Port 2222",
        "ListenAddress 127.0.0.1",
        "PasswordAuthentication no",
        "PermitRootLogin prohibit-password",
        "LogLevel VERBOSE",
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}",
        f"PidFile {tmp_path / 'sshd.pid'}",
    ):
        assert expected in lines


def test_main_reports_deploy_errors_without_traceback(monkeypatch, capsys):
    def broken() -> None:
        raise DeployError("it broke", "do the fix")

    monkeypatch.setattr(sbx, "up", broken)
    assert sbx.main(["up"]) == 1
    err = capsys.readouterr().err
    assert err == "error: it broke\nfix: do the fix\n"


def test_a_zombie_or_another_program_is_not_alive():
    child = subprocess.Popen(["sleep", "0"])
    sbx._wait(
        lambda: Path(f"/proc/{child.pid}/stat").read_text().split(")")[1].split()[0] == "Z", 5
    )
    try:
        assert not sbx._alive(child.pid, "sleep")  # exited, not yet reaped
    finally:
        child.wait()
    assert not sbx._alive(os.getpid(), "dockerd")
    assert not sbx._alive(None, "sshd")


def test_stop_kills_only_the_program_it_started(tmp_path):
    child = subprocess.Popen(["sleep", "60"])
    pid_file = tmp_path / "x.pid"
    try:
        pid_file.write_text(f"{child.pid}\n")
        assert sbx._stop(pid_file, "sshd") == "none started by the sandbox is running"
        assert child.poll() is None  # a pid file naming someone else's process kills nothing
        pid_file.write_text(f"{child.pid}\n")
        assert sbx._stop(pid_file, "sleep", timeout=5).startswith("stopped")
        assert child.wait(timeout=5) == -signal.SIGTERM
        assert not pid_file.exists()
    finally:
        child.kill()
        child.wait()


def test_stale_docker_pid_files_are_cleared(tmp_path, monkeypatch):
    stale = tmp_path / "docker.pid"
    stale.write_text(f"{os.getpid()}")  # a live pid, but not a dockerd: dockerd would refuse
    monkeypatch.setattr(sbx, "DOCKER_PID_FILES", ((stale, "dockerd"),))
    sbx._clear_stale_pid_files()
    assert not stale.exists()


# --------------------------------------------------------------------------- the real thing


def test_registry_answers_v2(sb):
    with urllib.request.urlopen(f"http://{sb.registry}/v2/", timeout=5) as resp:
        assert resp.status == 200


def test_ssh_login_runs_docker_on_the_vm(sb):
    result = subprocess.run(
        sbx.ssh_cmd(sb, "docker", "version", "--format", "{{.Server.Version}}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_paramiko_with_known_hosts_runs_docker_info(sb):
    client = _client(sb.known_hosts)
    try:
        _connect(client, sb)
        _, stdout, _ = client.exec_command("docker info --format '{{.ServerVersion}}'")
        assert stdout.channel.recv_exit_status() == 0
        assert stdout.read().strip()
    finally:
        client.close()


def test_paramiko_refuses_a_host_missing_from_known_hosts(sb, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    client = _client(empty)
    try:
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            _connect(client, sb)
    finally:
        client.close()


def test_sshd_log_counts_connections(sb):
    before = sb.sshd_log.read_text().count("Connection from")
    subprocess.run(sbx.ssh_cmd(sb, "true"), check=True, timeout=60)
    assert sb.sshd_log.read_text().count("Connection from") >= before + 1


def test_up_again_is_a_no_op(sb):
    before = _pids(sb)
    assert sbx.up() == sb
    assert _pids(sb) == before


def test_base_image_runs_python_311(sb):
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "python:3.11-slim",
            "python",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3.11"
