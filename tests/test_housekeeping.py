"""Housekeeping: old images and stopped containers pruned after a deploy and by `fab prune`,
free disk checked before a pull and a backup, `fab remove`.

The parsers are fed output captured from a sandbox VM; the rest runs against the sandbox VM:
images of the last releases kept and older ones gone, a rollback to the oldest kept, a backup
refused on a real full filesystem (a small tmpfs on the app's backups/), `fab remove`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from faultkit import full_tmpfs
from invoke import Result
from test_proxy import caddy  # noqa: F401  (this session's Caddy, a fixture)
from test_vm_commands import IMAGE, on, ran, scripted_vm
from vmkit import App, Images, checked, docker, output, unique

from deploy.commands import vm as cmd
from deploy.core import registry
from deploy.core.errors import DeployError
from deploy.core.settings import load_settings
from deploy.release import sequence
from deploy.vm import housekeeping as hk

DASH = shutil.which("dash") or "dash"
HELPER = Path(cmd.__file__).parent.parent / "vm" / "vm_helper.sh"

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
    assert [hk.human(n) for n in (0, 512, 2048, 230 * hk.MB, 3 * 1024 * hk.MB // 2,
                                  2 * 1024 ** 4)] == [
        "0 B", "512 B", "2 kB", "230 MB", "1.5 GB", "2 TB"]


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
        sequence.deploy_host(vm, "v2")
    message = err.value.message
    assert f"not enough free disk on vm to pull {IMAGE}:v2: 50 MB free on " \
        "/root/.deploy-sandbox/vms/vm1/docker (Docker's data root), 556 MB needed (300 MB, " \
        "the size of the previous release's image (v1), plus disk_headroom_mb 256 MB); " \
        "nothing was changed" in message, message
    assert "fab prune" in err.value.fix
    history = vm.runner.history
    assert not ran(history, "docker pull") and not ran(history, "backup-sqlite")
    assert ran(history, "lock-release-if")
    # the check phase's one round trip brought the figures: not asked again before the pull
    assert not ran(history, "disk-free docker") and not ran(history, "app-images")


def test_an_image_already_on_the_vm_needs_no_room(tmp_path):
    df = DF_DOCKER.replace("56647580", "0")
    answers = {on("disk-free docker"): Result(df),
               on("app-images"): Result(f"image sha256:{'aa' * 32} {300 * hk.MB} {IMAGE}:v2\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    sequence.deploy_host(vm, "v2")
    assert ran(vm.runner.history, "docker pull")
    # read once: the next pull of this connection asks the VM again, its answer fresh
    with pytest.raises(DeployError) as err:
        vm.pull("v3")  # no room for a v3 the VM does not have
    assert "not enough free disk on vm to pull" in err.value.message
    assert len(ran(vm.runner.history, "disk-free docker")) == 1


def test_a_backup_is_refused_with_the_figures_when_backups_has_no_room(tmp_path):
    answers = {on("disk-free backups"): Result(DF_FULL),
               on("file-size data/app.db data/app.db-wal"): Result("81920\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
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
    entry_ = sequence.deploy_host(vm, "v2")
    assert entry_["tag"] == "v2" and ran(vm.runner.history, f"{cmd.HELPER} record ")
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
    vm, out = scripted_vm(tmp_path, answers, keep_releases=2)
    sequence.deploy_host(vm, "v2")  # v2 and v1: the newest two releases
    assert ran(vm.runner.history, f"remove-images {IMAGE}:v0 {IMAGE}@sha256:v0")
    assert not ran(vm.runner.history, f"{IMAGE}:v1 {IMAGE}@sha256:v1")
    assert "prune 1 image (10 MB), 1 stopped container" in out.getvalue()


@pytest.mark.parametrize(("keep", "asked"), [(3, 0), (2, 1)])
def test_the_prune_lists_the_images_again_only_when_one_could_go(tmp_path, keep, asked):
    """v0 and v1 on the VM before the pull of v2 (the facts of the check phase said so): with
    three releases kept none of them can go, and the prune reads that answer instead of
    asking again; with two, v0 could, and the prune asks the VM as the switch left it."""
    history = "".join(json.dumps({"tag": t, "digest": f"sha256:{t}", "action": "deploy",
                                  "revision": "0001", "time": "T"}) + "\n"
                      for t in ("v0", "v1"))
    images = (f"image sha256:00 {10 * hk.MB} {IMAGE}:v0 {IMAGE}@sha256:v0\n"
              f"image sha256:11 {10 * hk.MB} {IMAGE}:v1 {IMAGE}@sha256:v1\nused sha256:11\n")
    answers = {on("history-read"): Result(history), on("app-images"): Result(images)}
    vm, out = scripted_vm(tmp_path, answers, keep_releases=keep)
    sequence.deploy_host(vm, "v2")
    assert len(ran(vm.runner.history, "app-images")) == asked
    assert bool(ran(vm.runner.history, "remove-images")) == bool(asked)
    assert ("prune 1 image (10 MB)" if asked else "prune nothing to remove") in out.getvalue()


def test_a_tag_the_pull_moved_does_not_keep_its_old_image_from_the_prune(tmp_path):
    """Before the pull, v1 named image 11; the pull of v1 moved it to image 22: 11 is no
    longer a kept release's image, so the prune must ask the VM (it could go)."""
    vm, _ = scripted_vm(tmp_path, {})
    history = [{"tag": "v0", "digest": "sha256:v0", "action": "deploy"},
               {"tag": "v1", "digest": "sha256:v1new", "action": "deploy"}]
    vm.images_before_pull = f"image sha256:11 {10 * hk.MB} {IMAGE}:v1 {IMAGE}@sha256:v0\n"
    assert hk.nothing_to_prune(vm, history, 1)  # v1 still names 11: kept
    vm.images_before_pull = f"image sha256:11 {10 * hk.MB} {IMAGE}:v1 {IMAGE}@sha256:v0\n"
    vm.pulled["v1"] = "sha256:22"
    assert not hk.nothing_to_prune(vm, history, 1)
    assert vm.images_before_pull is None  # read once


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


# --------------------------------------------------------------------------- on the VM


def own_tags(images: Images, tmp_path: Path, count: int) -> list[str]:
    """Tags of images no other test pulls: v1 with a label of their own each, pushed."""
    tags = []
    for i in range(count):
        tag = f"{images.v1}-{unique('hk')}"
        context = tmp_path / f"image-{i}"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {images.ref(images.v1)}\n"
                                            f"LABEL deploy-test-image={tag}\n")
        checked(docker("build", "--quiet", "-t", images.ref(tag), str(context), timeout=600))
        checked(docker("push", "--quiet", images.ref(tag), timeout=600))
        docker("image", "rm", images.ref(tag))  # the registry has it; the laptop needs none
        tags.append(tag)
    return tags


def on_vm(app: App, ref: str) -> bool:
    return app.vm_docker("image", "inspect", ref).returncode == 0


def failed(proc: subprocess.CompletedProcess[str]) -> str:
    text = output(proc)
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{text}"
    assert "Traceback" not in text, text
    return text


def test_a_deploy_keeps_the_images_of_the_last_releases_and_prunes_older_ones(
        make_app, images, tmp_path):
    """keep_releases = 2, four releases: the images of the two newest stay, the two older
    go (by tag and by digest), a stopped container of the app goes, and a rollback to the
    oldest kept release works."""
    a, b, c, d = own_tags(images, tmp_path, 4)
    app = make_app()
    app.env["DEPLOY_KEEP_RELEASES"] = "2"
    app.fab_ok("setup")
    first = app.deploy(a)
    assert re.search(r"recorded · prune nothing to remove", first), first
    app.deploy(b)
    third = app.deploy(c)
    assert re.search(r"· prune 1 image \(", third), third
    digests = {e["tag"]: e["digest"] for e in app.history()}
    assert not on_vm(app, images.ref(a)) and not on_vm(app, f"{images.image}@{digests[a]}")
    # a container of the app left stopped (a one-off run without --rm, say)
    stale = f"{app.project}-stale"
    checked(app.vm_docker("create", "--name", stale, "--label",
                          f"com.docker.compose.project={app.project}", images.ref(c)))
    fourth = app.deploy(d)
    assert re.search(r"· prune 1 image \([^)]*\), 1 stopped container", fourth), fourth
    assert stale not in app.container_names(running=False)
    for gone in (a, b):
        assert not on_vm(app, images.ref(gone)), gone
        assert not on_vm(app, f"{images.image}@{digests[gone]}"), gone
    for kept in (c, d):
        assert on_vm(app, images.ref(kept)), kept
    # the oldest kept release comes back
    out = app.fab_ok("rollback", f"--tag={c}")
    assert f"rolled back to {c}" in out, out
    assert app.serving_image() == images.ref(c)
    assert app.version()["version"] == "1"
    # `fab prune` by hand: the same rules (c and d are the newest two; nothing to remove)
    pruned = app.fab_ok("prune")
    assert "pruned nothing to remove (keep_releases = 2)" in pruned, pruned
    assert on_vm(app, images.ref(c)) and on_vm(app, images.ref(d))


def test_a_pull_without_room_is_refused_with_the_figures(make_app, images, tmp_path):
    """Docker's data root is the sandbox machine's own disk: it cannot be filled here, so the
    room asked for is made larger than any disk with disk_headroom_mb. The figures are the
    VM's df and the registry's size of the image."""
    [tag] = own_tags(images, tmp_path, 1)
    app = make_app()
    app.fab_ok("setup")
    app.deploy(images.v1)
    before = app.snapshot()
    headroom = 10 ** 9  # MB: a petabyte
    text = failed(app.fab("deploy", f"--tag={tag}",
                          env={"DEPLOY_DISK_HEADROOM_MB": str(headroom)}))
    in_registry = registry.image_size(images.image, tag)
    previous = int(checked(app.vm_docker("image", "inspect", "--format", "{{.Size}}",
                                         images.ref(images.v1))))
    assert in_registry and previous
    # the larger of the two figures the tool has
    why = "the image's compressed size in the registry" if in_registry > previous else \
        f"the size of the previous release's image ({images.v1})"
    found = re.search(rf"error: not enough free disk on \S+ to pull {re.escape(images.ref(tag))}: "
                      r"(\S+ [kMGT]?B) free on (\S+) \(Docker's data root\), \S+ [kMGT]?B needed "
                      rf"\({re.escape(hk.human(max(in_registry, previous)))}, {re.escape(why)}, "
                      rf"plus disk_headroom_mb {headroom} MB\); nothing was changed", text)
    assert found, text
    assert found[2].endswith("/docker"), found[2]  # the engine's data root, as df names it
    assert "fix: free disk space on the VM" in text
    assert app.snapshot() == before
    assert not on_vm(app, images.ref(tag))  # never pulled
    assert app.version()["version"] == "1"


def test_a_backup_on_a_full_disk_is_refused_before_it_starts(make_app, images):
    """backups/ on a small tmpfs filled up (inside the app's directory on the VM): the
    deploy stops before the backup, with the figures, and nothing is migrated."""
    app = make_app()
    app.fab_ok("setup")
    app.deploy(images.v1)
    app.post_item("before")
    db_size = os.path.getsize(app.vm("data/app.db"))
    with full_tmpfs(app, "backups", size="64k"):
        history = app.history()
        text = failed(app.fab("deploy", f"--tag={images.v2}"))
        backups = f"{app.app_dir}/backups"
        found = re.search(rf"error: not enough free disk on \S+ to back up the database: 0 B free "
                          rf"on {re.escape(backups)} \({re.escape(backups)}\), \S+ [kMG]?B "
                          r"needed \((\S+ [kMG]?B), the database's size, plus disk_headroom_mb "
                          r"256 MB\); nothing was changed", text)
        assert found, text
        assert found[1] == hk.human(db_size)
        # (the tmpfs is mounted in the VM's own mount namespace: looked at from there)
        assert app.vm_run("ls", "backups").stdout.split() == ["filler"]
    assert app.history() == history
    assert app.db_revision() == "0001" and app.item_names() == ["before"]
    assert app.version()["version"] == "1"
    assert not app.vm(".deploy/lock").exists()


def caddy_status(app: App) -> int:
    try:
        with urllib.request.urlopen(app.request("/version"), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_remove_takes_the_app_off_the_vm_and_its_data_only_when_asked(make_app, images,
                                                                      caddy):  # noqa: F811
    app = make_app().use_proxy(caddy)
    app.fab_ok("setup")
    app.deploy(images.v1)
    app.post_item("kept")
    route = caddy.path(f"apps/{app.project}.json")
    upstream = caddy.path(f"conf/upstreams/{app.project}")
    assert route.exists() and upstream.exists() and caddy_status(app) == 200
    volume = f"{app.project}_extra"  # a named volume of the app, as a Postgres app has
    checked(app.vm_docker("volume", "create", "--label",
                          f"com.docker.compose.project={app.project}", volume))
    before = app.snapshot()
    # no terminal to ask on, no --yes: refused
    text = failed(app.fab("remove"))
    assert "`fab remove` asks before it removes" in text and "nothing was removed" in text
    # a deploy holding the lock: refused
    lock = app.vm(".deploy/lock")
    lock.mkdir()
    (lock / "holder.json").write_text(json.dumps({"holder": "alice@laptop", "tag": "v9",
                                                  "time": "2030-01-01T00:00:00Z"}) + "\n")
    text = failed(app.fab("remove", "--yes"))
    assert "locked by another deploy: alice@laptop" in text and "nothing was removed" in text
    shutil.rmtree(lock)
    assert app.snapshot() == before and app.containers() and caddy_status(app) == 200

    out = app.fab_ok("remove", "--yes")
    assert "removed: route" in out and "kept: data/app.db" in out and "kept: backups" in out
    assert f"kept: volume {volume}" in out
    assert app.containers(running=False) == []
    assert not route.exists() and not upstream.exists()
    assert caddy_status(app) == 404  # Caddy no longer routes the app's host name
    assert sorted(os.listdir(app.vm())) == ["backups", "data"]
    assert os.listdir(app.vm("data")) == ["app.db"]
    assert app.item_names() == ["kept"]
    assert app.vm_docker("volume", "inspect", volume).returncode == 0
    assert app.vm_docker("network", "ls", "-q", "--filter",
                         f"label=com.docker.compose.project={app.project}").stdout.split() == []

    out = app.fab_ok("remove", "--data", "--yes")
    assert f"removed: volume {volume}" in out and "removed: file data" in out
    assert app.vm_docker("volume", "inspect", volume).returncode != 0
    assert not app.vm().exists()
