"""Sandbox VMs are separate machines as far as the tool can tell, and what the tool
says when one of them is broken: its engine down, its sshd refusing, its address silent. Then
multi-host: `host = "a,b"` deploys one host after the other and stops at the first failure.

VMs 1 and 2 are shared with other tests (nothing here breaks them); VMs 3 and 4 are this file's
and the fault campaign's (their engines and sshds get killed, and are always brought back).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAULT_VMS, assert_no_traceback, output
from vmkit import free_port, run, unique

import sandbox as sandbox_mod
from sandbox import box
from sandbox.proc import alive, read_pid, wait


def ssh(sb, vm, *remote: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A command on `vm` over SSH, host key checked (as a user logs in)."""
    return run(box.ssh_cmd(sb, shlex.join(remote), host=vm.name, port=22), timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: {output(proc)}"
    return proc.stdout.strip()


def in_vm_get(vm, url: str) -> str:
    """curl on the VM: the HTTP status, or 000 when nothing answers."""
    proc = run(vm.in_vm("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                        "3", url))
    return proc.stdout.strip() or "000"


def laptop_get(url: str) -> str:
    proc = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", url])
    return proc.stdout.strip() or "000"


# --------------------------------------------------------------------------- separation


@contextlib.contextmanager
def http_server(vm, bind: str) -> Iterator[tuple[str, str]]:
    """A container on `vm` answering HTTP on `bind`:PORT, until the block ends; (url, name)."""
    port, name = free_port(), unique("http-")
    ok(run(vm.docker("run", "-d", "--name", name, "-p", f"{bind}:{port}:8000",
                     "python:3.11-slim", "python3", "-m", "http.server", "8000")))
    try:
        url = f"http://{bind}:{port}/"
        assert wait(lambda: in_vm_get(vm, url) == "200", 30)
        yield url, name
    finally:
        run(vm.docker("rm", "-f", name))


def test_a_port_on_a_vms_loopback_is_not_reachable_from_the_laptop(sandbox, two_vms):
    vm1, vm2 = two_vms
    with http_server(vm1, "127.0.0.1") as (url, name):
        port = url.rsplit(":", 1)[1].strip("/")
        assert laptop_get(url) == "000"  # the laptop's loopback
        assert laptop_get(f"http://{vm1.address}:{port}/") == "000"  # the VM's address
        assert in_vm_get(vm2, url) == "000"  # the other VM
        # the container is vm1's alone: not in the laptop's engine, nor in vm2's
        assert name in ok(ssh(sandbox, vm1, "docker", "ps", "--format", "{{.Names}}"))
        assert name not in ok(run(["docker", "ps", "-a", "--format", "{{.Names}}"]))
        assert name not in ok(run(vm2.docker("ps", "-a", "--format", "{{.Names}}")))


def test_a_port_on_a_vms_address_is_reachable_from_the_other_vm(sandbox, two_vms):
    """VM to VM across the bridge (an app host reaching its database host; a swarm's nodes):
    the sandbox lets it through the laptop's firewall by itself."""
    vm1, vm2 = two_vms
    with http_server(vm1, vm1.address) as (url, _):
        assert in_vm_get(vm2, url) == "200"


def test_a_file_under_srv_on_one_vm_is_not_on_the_other_nor_on_the_laptop(sandbox, two_vms):
    vm1, vm2 = two_vms
    rel = f"{unique('sep-')}/written-on-vm1"
    try:
        ok(ssh(sandbox, vm1, "sh", "-c", f"mkdir -p /srv/{Path(rel).parent} && "
                                         f"echo hello > /srv/{rel}"))
        assert (vm1.srv / rel).read_text() == "hello\n"  # the laptop-side path of vm1's /srv
        assert ssh(sandbox, vm2, "test", "-e", f"/srv/{rel}").returncode == 1
        assert not (vm2.srv / rel).exists()
        assert not Path(f"/srv/{rel}").exists()
    finally:
        import shutil

        shutil.rmtree(vm1.srv / Path(rel).parent, ignore_errors=True)


def test_each_vm_has_its_own_name_address_engine_and_docker_config(sandbox, two_vms):
    seen = set()
    laptop = ok(run(["docker", "info", "--format", "{{.Name}}"]))
    for vm in two_vms:
        out = ok(ssh(sandbox, vm, "sh", "-c", "hostname; ip -4 -o addr show eth0; "
                     "docker info --format '{{.Name}} {{.DockerRootDir}}'; "
                     "ls /root/.docker/cli-plugins; docker compose version --short"))
        lines = out.splitlines()
        assert lines[0] == vm.name
        assert f" {vm.address}/24 " in lines[1]
        engine_name, root = lines[2].split()
        assert root == str(vm.dir / "docker")
        assert engine_name == vm.name != laptop
        seen.add(root)
        assert "docker-compose" in lines[3:] and "docker-buildx" in lines[3:]
    assert len(seen) == 2


def test_the_sandbox_images_are_in_each_vm_under_their_usual_names(sandbox, two_vms):
    from sandbox import images

    for vm in two_vms:
        have = ok(run(vm.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}")))
        for tag in images.IMAGES:
            assert tag in have.split(), (vm.name, tag)


# --------------------------------------------------------------------------- lifecycle


def test_up_again_is_a_no_op_and_up_after_a_crash_starts_the_vm_again(sandbox, fault_vms):
    vm = fault_vms[1]
    pids = {what: read_pid(vm.pid_file(what)) for what in ("holder", "dockerd", "sshd")}
    sandbox_mod.up(vms=max(FAULT_VMS))
    assert {what: read_pid(vm.pid_file(what)) for what in pids} == pids  # nothing restarted
    # a crash: the namespace holder killed; its dockerd, sshd, pid files and namespace left
    os.kill(pids["holder"], signal.SIGKILL)
    assert wait(lambda: not alive(pids["holder"], "sleep"), 10)
    assert alive(pids["dockerd"], "dockerd") and vm.netns_file.exists()
    started = time.monotonic()
    sandbox_mod.up(vms=max(FAULT_VMS))
    took = time.monotonic() - started
    assert vm.holder is not None and vm.holder != pids["holder"]
    assert not alive(pids["dockerd"], "dockerd")  # the old engine stopped, a new one runs
    assert read_pid(vm.pid_file("dockerd")) != pids["dockerd"]
    assert ok(ssh(sandbox, vm, "docker", "info", "--format", "{{.ServerVersion}}"))
    assert took < 90, took


def test_stopping_vms_twice_or_stopping_none_is_fine(sandbox, fault_vms, capsys):
    vm = fault_vms[1]
    box.down_vms(sandbox, [vm.index])
    assert vm.holder is None and not vm.netns_file.exists()
    assert not alive(read_pid(vm.pid_file("dockerd")), "dockerd")
    box.down_vms(sandbox, [vm.index])
    assert f"{vm.name}: not running" in capsys.readouterr().out
    assert box.main(["up", f"--vms={max(FAULT_VMS)}"]) == 0
    assert vm.holder is not None and box.vmlib.sshd_running(vm)


def test_up_refuses_a_vm_count_out_of_range(capsys):
    assert box.main(["up", "--vms=99"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --vms 99 is out of range\nfix: ")


SEED_VM = 20  # this test's alone: removed before and after


def test_a_new_vm_starts_from_the_seed_and_its_images_stay_its_own(sandbox, capsys):
    from sandbox import images

    vm = sandbox.vm(SEED_VM)

    def remove_vm() -> None:
        box.vmlib.stop_vm(vm)
        shutil.rmtree(vm.dir, ignore_errors=True)

    remove_vm()
    try:
        sandbox_mod.up(only=[SEED_VM])  # loads and leaves the seed, if no VM did before
        seed = box.vmlib.seed_dir(vm)
        assert (seed / "ids.json").is_file()
        remove_vm()
        capsys.readouterr()
        sandbox_mod.up(only=[SEED_VM])
        assert "images from the seed" in capsys.readouterr().out
        have = ok(run(vm.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}")))
        assert set(images.IMAGES) <= set(have.split())
        # the layers are the seed's files, hard-linked, not copies
        ours = {p.stat().st_ino for p in (vm.dir / "docker" / "overlay2").rglob("*")
                if p.is_file() and not p.is_symlink()}
        theirs = {p.stat().st_ino for p in (seed / "overlay2").rglob("*")
                  if p.is_file() and not p.is_symlink()}
        assert ours and ours <= theirs
        # a file a container changes, and an image removed, stay this VM's
        changed = ok(run(vm.docker("run", "--rm", images.PYTHON, "sh", "-c",
                                   "echo changed >> /etc/debian_version; python3 -c 'print(42)'")))
        assert changed == "42"
        ok(run(vm.docker("image", "rm", images.CADDY)))
        remove_vm()
        capsys.readouterr()
        sandbox_mod.up(only=[SEED_VM])
        assert "images from the seed" in capsys.readouterr().out
        version = ok(run(vm.docker("run", "--rm", images.PYTHON, "cat", "/etc/debian_version")))
        assert "changed" not in version
        ok(run(vm.docker("image", "inspect", images.CADDY)))
    finally:
        remove_vm()


# --------------------------------------------------------------------------- broken VMs


@pytest.fixture
def pair(make_app, fault_vms, images):
    """One app repo on both fault VMs (vm3 first), v1 deployed to each; the VMs restored after."""
    first = make_app(vm=fault_vms[0])
    second = dataclasses.replace(first, machine=fault_vms[1], tunnel=None)
    hosts = ",".join(vm.name for vm in fault_vms)
    first.env.update(DEPLOY_HOST=hosts, DEPLOY_PORT="22")
    first.fab_ok("setup")
    first.deploy(images.v1)
    try:
        yield first, second
    finally:
        sandbox_mod.up(vms=max(FAULT_VMS))
        second.tear_down()


def kill_engine(vm) -> int:
    pid = read_pid(vm.pid_file("dockerd"))
    assert alive(pid, "dockerd")
    os.kill(pid, signal.SIGKILL)
    assert wait(lambda: not alive(pid, "dockerd"), 10)
    return pid


def test_both_vms_serve_v1_and_report_it(pair, images):
    first, second = pair
    for app in pair:
        assert app.version() == {"version": "1", "revision": "0001"}
        assert app.release_env()["DEPLOY_TAG"] == images.v1
    status = first.fab_ok("status")
    for vm in (first.machine, second.machine):
        assert f"host:      {vm.name}" in status
    releases = first.fab_ok("releases")
    assert f"{first.machine.name}:" in releases and f"{second.machine.name}:" in releases


def test_a_vm_whose_engine_is_down(pair, images):
    first, second = pair
    before = second.snapshot()
    kill_engine(first.machine)
    started = time.monotonic()
    proc = first.fab("deploy", f"--tag={images.v2}")
    took = time.monotonic() - started
    out = output(proc)
    assert proc.returncode == 1, out
    assert_no_traceback(proc)
    assert "Cannot connect to the Docker daemon" in out, out  # docker's own words
    assert "\nerror: " in "\n" + proc.stderr and "fix: " in proc.stderr, proc.stderr
    assert took < 120, took
    # stopped at the first host: the second was not touched
    assert f"stopped at {first.machine.name}" in proc.stderr
    assert second.snapshot() == before and second.version()["version"] == "1"
    assert first.release_env()["DEPLOY_TAG"] == images.v1
    assert not first.vm(".deploy/lock").exists()


def test_a_vm_whose_sshd_refuses(pair, images):
    first, second = pair
    box.stop(first.machine.pid_file("sshd"), "sshd", timeout=10)
    started = time.monotonic()
    proc = first.fab("deploy", f"--tag={images.v2}")
    out = output(proc)
    assert proc.returncode == 1, out
    assert_no_traceback(proc)
    assert f"cannot connect to {first.machine.name}:22" in out, out
    assert f"Unable to connect to port 22 on {first.machine.address}" in out  # paramiko's words
    assert time.monotonic() - started < 30
    assert second.version()["version"] == "1"
    assert [e["tag"] for e in second.history()] == [images.v1]


def test_a_vm_whose_address_does_not_answer(pair, images):
    first, second = pair
    drop = ["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"]
    ok(run(first.machine.in_vm(*drop)))
    try:
        started = time.monotonic()
        proc = first.fab("status", env={"DEPLOY_CONNECT_TIMEOUT": "3"})
        took = time.monotonic() - started
    finally:
        run(first.machine.in_vm("iptables", "-D", *drop[2:]))
    out = output(proc)
    assert proc.returncode == 1, out
    assert_no_traceback(proc)
    assert f"cannot connect to {first.machine.name}:22" in out, out
    assert took < 15, took
    assert second.version()["version"] == "1"


# --------------------------------------------------------------------------- multi-host


def test_multi_host_deploys_one_after_the_other(pair, images):
    first, second = pair
    out = first.deploy(images.v2)
    assert out.index(f"[{first.machine.name}]") < out.index(f"[{second.machine.name}]")
    for app in pair:
        assert app.version() == {"version": "2", "revision": "0002"}
    # -H names the hosts instead of the settings, the same way
    out = first.fab_ok("-H", f"{second.machine.name},{first.machine.name}", "rollback",
                       f"--tag={images.v1}")
    assert out.index(f"[{second.machine.name}]") < out.index(f"[{first.machine.name}]")
    for app in pair:
        assert app.version()["version"] == "1"


def test_multi_host_stops_at_the_vm_whose_engine_dies_mid_deploy(pair, images):
    """The second VM's engine is killed once the deploy reached it: the first VM has v2, the
    second kept v1 (its files, history and lock), and the report says which is which."""
    from faultkit import start_fab

    first, second = pair
    run_ = start_fab(first, "deploy", f"--tag={images.v2}")
    lock = second.vm(".deploy/lock")
    run_.when(lock.exists, lambda: kill_engine(second.machine), "the deploy reaching vm4",
              timeout=180, interval=0.005)
    code, out = run_.wait(timeout=180)
    assert code == 1, out
    assert "Traceback" not in out
    assert (f"{images.v2} stopped at {second.machine.name}: now on {images.v2}: "
            f"{first.machine.name}") in out, out
    assert first.version() == {"version": "2", "revision": "0002"}
    assert first.release_env()["DEPLOY_TAG"] == images.v2
    assert second.release_env()["DEPLOY_TAG"] == images.v1
    assert [e["tag"] for e in second.history()] == [images.v1]
    assert not second.vm(".deploy/lock").exists(), out
