"""Host keys are verified everywhere: our connections, and Fabric's own when our fabfile loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from deploy.core.hostkeys import KnownHostsPolicy

HOST = "[127.0.0.1]:2222"


def write_known(path: Path, host: str, key: paramiko.PKey) -> Path:
    path.write_text(f"{host} {key.get_name()} {key.get_base64()}\n")
    return path


def test_known_key_is_accepted(tmp_path: Path) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(_host_key(tmp_path)))
    policy = KnownHostsPolicy([write_known(tmp_path / "kh", HOST, key)])
    assert policy.missing_host_key(None, HOST, key) is None


def test_unknown_host_is_refused(tmp_path: Path) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(_host_key(tmp_path)))
    policy = KnownHostsPolicy([write_known(tmp_path / "kh", "[other]:22", key)])
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        policy.missing_host_key(None, HOST, key)


def test_changed_key_is_refused(tmp_path: Path) -> None:
    old = paramiko.Ed25519Key.from_private_key_file(str(_host_key(tmp_path, "old")))
    new = paramiko.Ed25519Key.from_private_key_file(str(_host_key(tmp_path, "new")))
    policy = KnownHostsPolicy([write_known(tmp_path / "kh", HOST, old)])
    with pytest.raises(paramiko.BadHostKeyException):
        policy.missing_host_key(None, HOST, new)


def test_missing_files_know_nothing(tmp_path: Path) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(_host_key(tmp_path)))
    with pytest.raises(paramiko.SSHException):
        KnownHostsPolicy([tmp_path / "nope"]).missing_host_key(None, HOST, key)


def test_fabric_connections_get_the_policy(tmp_path: Path) -> None:
    code = (
        "import fabric, fabric.connection as fc\n"
        "from deploy.core.hostkeys import verify_fabric_connections\n"
        f"verify_fabric_connections([{str(tmp_path / 'kh')!r}])\n"
        "c = fabric.Connection('127.0.0.1')\n"
        "print(type(c.client._policy).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "KnownHostsPolicy"


def _host_key(tmp_path: Path, name: str = "host") -> Path:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _fab(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    return subprocess.run([sys.executable, "-m", "fabric", *args], cwd=repo, text=True,
                          capture_output=True, env={**clean, "DEPLOY_APP_DIR": "/srv/none", **env})


def test_fab_run_checks_the_host_key(example_repo: Path, sandbox, vm1) -> None:
    """`fab run` reaches the VM with a known key, and is refused (nothing run) without it."""
    from vmkit import unique

    (example_repo / "fabfile.py").write_text("from deploy.cli.fabtasks import ns  # noqa: F401\n")
    name = unique("hostkey-")
    marker = vm1.srv / name  # /srv/NAME on the VM
    home = vm1.srv / f"{name}-dir"  # app_dir: `fab run` runs there (it must exist)
    target = {"DEPLOY_HOST": vm1.name, "DEPLOY_PORT": "22", "DEPLOY_APP_DIR": f"/srv/{home.name}",
              "DEPLOY_KEY_FILE": str(sandbox.key_file),
              "DEPLOY_KNOWN_HOSTS": str(sandbox.known_hosts)}
    home.mkdir()
    try:
        ok = _fab(example_repo, "run", f"--cmd=echo hello; touch /srv/{name}; exit 4", **target)
        assert ok.returncode == 4, ok.stderr
        assert "hello" in ok.stdout and marker.exists()
        marker.unlink()
        empty = example_repo / "known_hosts"
        empty.write_text("")
        refused = _fab(example_repo, "run", f"--cmd=touch /srv/{name}",
                       **{**target, "DEPLOY_KNOWN_HOSTS": str(empty)})
        assert refused.returncode == 1
        assert f"host key of {vm1.name}:22 is unknown" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)
        home.rmdir()


def test_a_vm_connection_sends_without_delay_and_opens_again_the_same_way(tmp_path, sandbox,
                                                                           vm1) -> None:
    """The socket under a deploy's connection has Nagle's algorithm off (SSH's small packets
    wait for no delayed ACK), opened again after a drop as it was first, host key checked;
    the VM's root runs a fresh VM's ~/.bashrc, not the laptop's."""
    import socket

    from deploy.core.settings import Settings
    from deploy.vm.session import Target, connect

    settings = Settings(root=tmp_path, host=vm1.address, user=sandbox.ssh_user,
                        key_file=str(sandbox.key_file), known_hosts=str(sandbox.known_hosts))
    conn = connect(settings, Target(vm1.address, sandbox.ssh_user, 22))
    try:
        socks = []
        for _ in range(2):
            sock = conn.client.get_transport().sock
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            socks.append(sock)
            assert conn.run("echo up", hide=True, in_stream=False).stdout == "up\n"
            conn.close()  # as a dropped connection is opened again (deploy.vm.shell)
            conn.open()
        assert socks[0] is not socks[1]
        rc = conn.run("cat ~/.bashrc", hide=True, in_stream=False).stdout
        assert rc == "# root's ~/.bashrc on this sandbox VM: nothing to run\n", rc
    finally:
        conn.close()
