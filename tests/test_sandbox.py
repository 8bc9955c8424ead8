"""The sandbox deploy target, against the real thing: engine, registry, base image and sshd.

The session fixture calls `up()`, which is a no-op when `.ci/setup` already brought it up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import paramiko
import pytest

from deploy.core.errors import DeployError
from sandbox import box as sbx
from sandbox import images


@pytest.fixture(scope="session")
def sb() -> sbx.Sandbox:
    """The sandbox, up."""
    return sbx.up()


def _pids(sb: sbx.Sandbox) -> dict[str, int | None]:
    """pid of every process the sandbox recorded."""
    return {p.name: sbx.read_pid(p) for p in sorted(sb.state_dir.glob("*.pid"))}


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
    def broken(vms: int = 1) -> None:
        raise DeployError("it broke", "do the fix")

    monkeypatch.setattr(sbx, "up", broken)
    assert sbx.main(["up"]) == 1
    err = capsys.readouterr().err
    assert err == "error: it broke\nfix: do the fix\n"


def test_a_zombie_or_another_program_is_not_alive():
    child = subprocess.Popen(["sleep", "0"])
    sbx.wait(
        lambda: Path(f"/proc/{child.pid}/stat").read_text().split(")")[1].split()[0] == "Z", 5
    )
    try:
        assert not sbx.alive(child.pid, "sleep")  # exited, not yet reaped
    finally:
        child.wait()
    assert not sbx.alive(os.getpid(), "dockerd")
    assert not sbx.alive(None, "sshd")


def test_stop_kills_only_the_program_it_started(tmp_path):
    child = subprocess.Popen(["sleep", "60"])
    pid_file = tmp_path / "x.pid"
    try:
        pid_file.write_text(f"{child.pid}\n")
        assert sbx.stop(pid_file, "sshd") == "none started by the sandbox is running"
        assert child.poll() is None  # a pid file naming someone else's process kills nothing
        pid_file.write_text(f"{child.pid}\n")
        assert sbx.stop(pid_file, "sleep", timeout=5).startswith("stopped")
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


# --------------------------------------------------------------------------- sandbox images


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: {proc.stdout}{proc.stderr}"
    return proc.stdout.strip()


def _wait_healthy(name: str, timeout: float = 90) -> str:
    def health() -> str:
        return _ok(_docker("inspect", "-f", "{{.State.Health.Status}}", name))

    sbx.wait(lambda: health() in ("healthy", "unhealthy"), timeout, interval=0.5)
    return health()


@pytest.fixture
def names():
    """Unique container/network names; everything under them removed afterwards."""
    from vmkit import unique

    made = {"containers": [], "networks": []}

    def _name(kind: str = "containers") -> str:
        made[kind].append(unique("sbx-img-"))
        return made[kind][-1]

    yield _name
    if made["containers"]:
        _docker("rm", "-f", "-v", *made["containers"])
    for network in made["networks"]:
        _docker("network", "rm", network)


@pytest.mark.parametrize("tag", ["postgres:17", "pgvector/pgvector:pg17"])
def test_postgres_image_inits_from_env_and_stores_vectors(sb, names, tag):
    pg, net = names(), names("networks")
    _ok(_docker("network", "create", net))
    _ok(_docker("run", "-d", "--name", pg, "--network", net, "-e", "POSTGRES_USER=app",
                "-e", "POSTGRES_PASSWORD=s3cr'et pw", "-e", "POSTGRES_DB=appdb", tag))
    assert _wait_healthy(pg) == "healthy", _docker("logs", pg).stderr
    sql = ("CREATE EXTENSION vector; CREATE TABLE items (id int, embedding vector(3)); "
           "INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[9,9,9]'); "
           "SELECT id FROM items ORDER BY embedding <-> '[1,2,4]' LIMIT 1;")
    assert _ok(_docker("exec", pg, "psql", "-U", "app", "-d", "appdb", "-tAq", "-c", sql)) == "1"
    # over the network, as the app connects: the password works, a wrong one is refused
    client = ["run", "--rm", "--network", net, tag, "psql", "-h", pg, "-U", "app", "-d", "appdb",
              "-tAc", "SELECT embedding FROM items WHERE id = 2"]
    good = _docker("run", "--rm", "--network", net, "-e", "PGPASSWORD=s3cr'et pw", *client[4:])
    assert _ok(good) == "[9,9,9]"
    bad = _docker("run", "--rm", "--network", net, "-e", "PGPASSWORD=wrong", *client[4:])
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
    assert _ok(_docker("exec", pg, "ps", "-o", "user=", "-C", "postgres")).split()[0] == "postgres"
    # docker stop (SIGTERM) is a fast shutdown: exit 0 well within the 10 s grace period
    _ok(_docker("stop", pg))
    assert _ok(_docker("inspect", "-f", "{{.State.ExitCode}}", pg)) == "0"
    assert "database system is shut down" in _docker("logs", pg).stderr


def test_postgres_image_refuses_to_init_without_a_password(sb, names):
    pg = names()
    proc = _docker("run", "--name", pg, "postgres:17")
    assert proc.returncode == 1
    assert "POSTGRES_PASSWORD is not set" in proc.stderr


def test_caddy_image_proxies_to_a_backend(sb, names, tmp_path):
    from vmkit import free_port

    net, backend, caddy = names("networks"), names(), names()
    _ok(_docker("network", "create", net))
    _ok(_docker("run", "-d", "--name", backend, "--network", net, "python:3.11-slim",
                "sh", "-c", "echo hello-from-backend > index.html && "
                "exec python3 -m http.server 8000"))
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(f":80 {{\n\treverse_proxy {backend}:8000\n}}\n")
    port = free_port()
    _ok(_docker("run", "-d", "--name", caddy, "--network", net, "-p", f"127.0.0.1:{port}:80",
                "-v", f"{caddyfile}:/etc/caddy/Caddyfile:ro", "caddy:2"))
    body = ""

    def answered() -> bool:
        nonlocal body
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                body = r.read().decode()
        except OSError:
            return False
        return True

    assert sbx.wait(answered, 30, interval=0.3), _docker("logs", caddy).stderr
    assert body.strip() == "hello-from-backend"
    version = _ok(_docker("exec", caddy, "caddy", "version"))
    assert version.startswith("v2.11"), version
    # the admin API answers on :2019 inside the container (caddy reload uses it)
    config = _ok(_docker("exec", caddy, "python3", "-c", "import urllib.request as u; print("
                         "u.urlopen('http://localhost:2019/config/').read().decode())"))
    assert backend in config


def test_postgres_entrypoint_is_posix_sh():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (.ci/setup installs it)")
    script = images.FILES / "postgres-entrypoint.sh"
    proc = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout


# --------------------------------------------------------------------------- python:3.10-slim


@pytest.mark.skipif(images.pyenv_python310() is None, reason="no pyenv Python 3.10 here")
def test_python310_image_runs_310_and_pip_installs_from_pypi(sb):
    assert images.ensure_python310(sb.cache_dir) == "present"  # `up` made it, and caches it
    script = ("python --version && python3 --version && command -v python && command -v pip && "
              "pip install --quiet --no-cache-dir --root-user-action=ignore "
              "--disable-pip-version-check six==1.16.0 && "
              "python -c 'import six, ssl, sqlite3, ctypes; print(six.__version__, six.__file__)'")
    out = _ok(_docker("run", "--rm", images.PYTHON310, "sh", "-c", script, timeout=300))
    lines = out.splitlines()
    assert lines[0] == lines[1] == f"Python {images.pyenv_python310().name}"  # 3.10.N
    assert lines[2:] == ["/usr/local/bin/python", "/usr/local/bin/pip",
                         "1.16.0 /usr/local/lib/python3.10/site-packages/six.py"]


def test_python310_image_says_what_is_missing_without_pyenv(tmp_path):
    said = images.ensure_python310(tmp_path / "cache", versions=tmp_path / "versions")
    assert said.startswith("python:3.10-slim not made: no pyenv Python 3.10 in ")
    assert "pyenv install 3.10" in said and not (tmp_path / "cache").exists()
