"""Housekeeping: old images and stopped containers pruned after a deploy and by `fab prune`,
free disk checked before a pull and a backup, `fab remove`.

The parsers are fed output captured from a sandbox VM; the rest runs against the sandbox VM:
images of the last releases kept and older ones gone, a rollback to the oldest kept, a backup
refused on a real full filesystem (a small tmpfs on the app's backups/), `fab remove`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from invoke import Result
from test_proxy import caddy  # noqa: F401  (this session's Caddy, a fixture)
from test_vm_commands import IMAGE, on, ran, scripted_vm

from deploy import remote
from deploy.commands import vm as cmd
from deploy.errors import DeployError
from deploy.remote import housekeeping as hk
from deploy.settings import load_settings

DASH = shutil.which("dash") or "dash"
HELPER = Path(cmd.__file__).parent.parent / "vm_helper.sh"

# `sh .deploy/bin/helper-… app-images 127.0.0.1:5000/corpus-uvws-e13acbb8ba` on vm1
APP_IMAGES = """\
image sha256:babd31229d0c831fa8aa40c4807cdd3f20226a2e43ddff518be5c1dd738aab93 320394813 \
127.0.0.1:5000/corpus-uvws-e13acbb8ba:f78befa \
127.0.0.1:5000/corpus-uvws-e13acbb8ba@sha256:1351456ff449a4d82cf7a3beba177772e7c3778ff3a5728999cd4e792f5f1f85
image sha256:bd5ba15c22d350a0a5dec2597638420bf0765d678378050867831395a97f47a3 320395155 \
127.0.0.1:5000/corpus-uvws-e13acbb8ba:518c1c6 \
127.0.0.1:5000/corpus-uvws-e13acbb8ba@sha256:e28c8aecaa42d0f523e60689fbd16ab1e3d12ae1d8ddfba61314866e211ade99
used sha256:19fcb4bc658a6fc644e98622a990f1e814c07c7b708dd5274a4646e567a6af07
used sha256:bd5ba15c22d350a0a5dec2597638420bf0765d678378050867831395a97f47a3
"""
# `df -Pk` of the engine's data root on vm1, and of a 16k tmpfs on an app's backups/
DF_DOCKER = """\
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 49743332  56647580      47% /root/.deploy-sandbox/vms/vm1/docker
"""
DF_FULL = """\
Filesystem     1024-blocks  Used Available Capacity Mounted on
tmpfs                   16    16         0     100% /srv/t-1b2c3d/backups
"""


# --------------------------------------------------------------------------- parsers


def test_app_images_are_parsed_from_the_vms_output():
    images, used = hk.parse_app_images(APP_IMAGES)
    assert [i.id[:14] for i in images] == ["sha256:babd312", "sha256:bd5ba15"]
    assert images[0].size == 320394813
    assert images[0].refs == ("127.0.0.1:5000/corpus-uvws-e13acbb8ba:f78befa",
                              "127.0.0.1:5000/corpus-uvws-e13acbb8ba@sha256:13514"
                              "56ff449a4d82cf7a3beba177772e7c3778ff3a5728999cd4e792f5f1f85")
    assert images[1].id in used and images[0].id not in used
    assert hk.parse_app_images("garbage\nimage x notanumber\n") == ([], set())


def test_df_is_parsed_with_its_mount_point():
    assert hk.parse_df(DF_DOCKER) == hk.Free(56647580 * 1024,
                                             "/root/.deploy-sandbox/vms/vm1/docker")
    assert hk.parse_df(DF_FULL) == hk.Free(0, "/srv/t-1b2c3d/backups")
    spaced = DF_FULL.replace("/srv/t-1b2c3d/backups", "/srv/my app/backups")
    assert hk.parse_df(spaced) == hk.Free(0, "/srv/my app/backups")
    assert hk.parse_df("") is None
    assert hk.parse_df("df: /nope: No such file or directory\n") is None


def test_sizes_read_as_people_write_them():
    assert [hk.human(n) for n in (0, 512, 2048, 230 * hk.MB, 3 * 1024 * hk.MB // 2)] == [
        "0 B", "512 B", "2 kB", "230 MB", "1.5 GB"]


def entry(tag: str, digest: str = "", action: str = "deploy") -> dict:
    return {"tag": tag, "digest": digest, "action": action}


def image(ident: str, *refs: str, size: int = 100) -> hk.LocalImage:
    return hk.LocalImage(f"sha256:{ident}", size, refs)


def test_images_older_than_the_kept_releases_go_and_the_rest_stays():
    repo = "reg/app"
    history = [entry("v1", "sha256:d1"), entry("v2", "sha256:d2"), entry("v3", "sha256:d3"),
               entry("v2", "sha256:d2", "rollback"), entry("v4", "sha256:d4")]
    # the newest 2 releases, a rollback to v2 and v2's deploy counted once: v4 and v2
    assert [e["tag"] for e in hk.kept_releases(history, 2)] == ["v4", "v2"]
    assert [e["tag"] for e in hk.kept_releases(history, 3)] == ["v4", "v2", "v3"]
    assert hk.kept_releases(history, 0) == []
    images = [
        image("1", "reg/app:v1", "reg/app@sha256:d1"),   # old: goes
        image("2", "reg/app:v2", "reg/app@sha256:d2"),   # kept release
        image("3", "reg/app@sha256:d3"),                 # old, by digest only: goes
        image("4", "reg/app:v4", "reg/app@sha256:d4"),   # the current release
        image("5", "reg/app:hand"),                      # no release named it: stays
        image("6", "reg/app:v1-old", "reg/app@sha256:d1x", "other/app:v1"),  # never recorded
        image("7", "reg/app:v3", "reg/app@sha256:d3b"),  # old tag v3: goes
    ]
    doomed = hk.images_to_prune(images, set(), history, 2, repo)
    assert [i.id for i in doomed] == ["sha256:1", "sha256:3", "sha256:7"]
    # an image a container uses (any app's) stays, whatever the history says
    assert [i.id for i in hk.images_to_prune(images, {"sha256:1"}, history, 2, repo)] == [
        "sha256:3", "sha256:7"]
    # keep_releases 5: all four releases of this history stay
    assert hk.images_to_prune(images, set(), history, 5, repo) == []
    # only this repository's references are removed (another repository's tag stays)
    assert hk.own_refs(repo, image("6", "reg/app:v1", "other/app:v1", "reg/app-x:v1")) == [
        "reg/app:v1"]


# --------------------------------------------------------------------------- the flow


def test_a_pull_is_refused_with_the_figures_when_the_disk_is_too_small(tmp_path):
    """The engine's filesystem has 50 MB free; the previous release's image is 300 MB: the
    deploy stops before the pull, having changed nothing."""
    df = DF_DOCKER.replace("56647580", str(50 * 1024))
    answers = {on("disk-free docker"): Result(df),
               on("app-images"): Result(f"image sha256:{'aa' * 32} {300 * hk.MB} {IMAGE}:v1\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        remote.deploy(vm, "v2")
    message = err.value.message
    assert f"not enough free disk on vm to pull {IMAGE}:v2: 50 MB free on " \
        "/root/.deploy-sandbox/vms/vm1/docker (Docker's data root), 556 MB needed (300 MB, " \
        "the size of the previous release's image (v1), plus disk_headroom_mb 256 MB); " \
        "nothing was changed" in message, message
    assert "fab prune" in err.value.fix
    history = vm.runner.history
    assert not ran(history, "docker pull") and not ran(history, "backup-sqlite")
    assert ran(history, "lock-release-if")


def test_an_image_already_on_the_vm_needs_no_room(tmp_path):
    df = DF_DOCKER.replace("56647580", "0")
    answers = {on("disk-free docker"): Result(df),
               on("app-images"): Result(f"image sha256:{'aa' * 32} {300 * hk.MB} {IMAGE}:v2\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    remote.deploy(vm, "v2")
    assert ran(vm.runner.history, "docker pull")


def test_a_backup_is_refused_with_the_figures_when_backups_has_no_room(tmp_path):
    answers = {on("disk-free backups"): Result(DF_FULL),
               on("file-size data/app.db data/app.db-wal"): Result("81920\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        remote.deploy(vm, "v2")
    assert "not enough free disk on vm to back up the database: 0 B free on " \
        "/srv/t-1b2c3d/backups (/srv/app/backups), 256.1 MB needed (80 kB, the database's " \
        "size, plus disk_headroom_mb 256 MB); nothing was changed" in err.value.message
    history = vm.runner.history
    assert not ran(history, "backup-sqlite") and not ran(history, "alembic upgrade")
    assert not ran(history, "up -d")


def test_a_prune_that_fails_is_reported_and_the_deploy_succeeds(tmp_path):
    answers = {on("prune-containers"): Result("", stderr="Cannot connect to the Docker daemon",
                                              exited=1)}
    vm, out = scripted_vm(tmp_path, answers)
    entry_ = remote.deploy(vm, "v2")
    assert entry_["tag"] == "v2" and ran(vm.runner.history, "history-append")
    text = out.getvalue()
    assert "prune failed" in text
    assert "warning: pruning on vm failed (the release is recorded and serving): removing " \
        "the app's stopped containers failed" in text


def test_the_prune_phase_removes_old_images_by_reference(tmp_path):
    history = "".join(json.dumps({"tag": t, "digest": f"sha256:{t}", "action": "deploy",
                                  "revision": "0001", "time": "T"}) + "\n"
                      for t in ("v0", "v1"))
    images = (f"image sha256:00 {10 * hk.MB} {IMAGE}:v0 {IMAGE}@sha256:v0\n"
              f"image sha256:11 {10 * hk.MB} {IMAGE}:v1 {IMAGE}@sha256:v1\n")
    answers = {on("history-read"): Result(history), on("app-images"): Result(images),
               on("prune-containers"): Result("old-app-1\n")}
    vm, out = scripted_vm(tmp_path, answers, keep_releases=1)
    remote.deploy(vm, "v2")
    assert ran(vm.runner.history, f"docker image rm {IMAGE}:v0 {IMAGE}@sha256:v0")
    assert not ran(vm.runner.history, f"{IMAGE}:v1 {IMAGE}@sha256:v1")  # the newest recorded
    assert "prune 1 image (10 MB), 1 stopped container" in out.getvalue()


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("key", "value", "says"), [
    ("keep_releases", "0", "must be 1 or more"),
    ("disk_headroom_mb", "-1", "must not be negative"),
])
def test_housekeeping_settings_are_checked(tmp_path, key, value, says):
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={f"DEPLOY_{key.upper()}": value})
    assert f"setting '{key}' in the environment" in err.value.message
    assert says in err.value.message


def test_housekeeping_settings_defaults(tmp_path):
    s = load_settings(tmp_path, environ={})
    assert (s.keep_releases, s.disk_headroom_mb) == (5, 256)


# --------------------------------------------------------------------------- the helper


def helper(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DASH, str(HELPER), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=False)


def test_disk_free_and_file_size_under_dash(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "app.db").write_bytes(b"x" * 3000)
    (tmp_path / "data" / "app.db-wal").write_bytes(b"y" * 96)
    sized = helper(tmp_path, "file-size", "data/app.db", "data/app.db-wal")
    assert sized.stdout == "3096\n", sized.stderr
    assert helper(tmp_path, "file-size", "data/none.db").stdout == "0\n"
    # backups/ does not exist yet: the filesystem of the nearest directory that does
    free = helper(tmp_path, "disk-free", "backups")
    parsed = hk.parse_df(free.stdout)
    assert parsed is not None and parsed.available > 0, free.stdout + free.stderr
    direct = hk.parse_df(subprocess.run(["df", "-Pk", str(tmp_path)], capture_output=True,
                                        text=True, check=False).stdout)
    assert direct is not None and parsed.mount == direct.mount  # (free space moves meanwhile)
