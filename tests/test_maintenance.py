"""Maintenance mode behind Caddy: `fab maintenance on|off` by hand, and the window `fab
restore` and `fab rollback --downgrade` put users in (a 503 page with Retry-After instead of
connection errors), ended however the command ends.

The settings and the page are checked without a VM; the rest runs against the sandbox VM
behind this session's Caddy (test_proxy's), under a probe asking /version 100 times a second
through Caddy, as users would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import child_env
from test_proxy import caddy, caddy_loads  # noqa: F401 (a fixture)
from vmkit import App, Hit, Probe, output

from deploy.core.errors import DeployError
from deploy.core.settings import load_settings
from deploy.release import maintenance

# --------------------------------------------------------------------------- no VM


def test_the_page_is_the_apps_file_or_the_toolkits_own_and_is_checked(tmp_path: Path):
    (tmp_path / "deploy.toml").write_text('proxy = true\nproxy_host = "shop.test,www.shop.test"\n')
    own = maintenance.page(load_settings(tmp_path, environ={}))
    assert "<h1>Down for maintenance</h1>" in own and "shop.test is being updated" in own
    (tmp_path / "down.html").write_text("<p>back at 5</p>\n")
    settings = load_settings(tmp_path, environ={"DEPLOY_MAINTENANCE_PAGE": "down.html"})
    assert maintenance.page(settings) == "<p>back at 5</p>\n"
    for name, data, why in (("missing.html", None, "cannot read maintenance_page"),
                            ("big.html", b"x" * (600 * 1024), "more than the"),
                            ("latin.html", "caf\xe9".encode("latin-1"), "is not UTF-8"),
                            ("empty.html", b"  \n", "is empty or not text")):
        if data is not None:
            (tmp_path / name).write_bytes(data)
        settings = load_settings(tmp_path, environ={"DEPLOY_MAINTENANCE_PAGE": name})
        with pytest.raises(DeployError) as caught:
            maintenance.page(settings)
        assert why in caught.value.message and "maintenance_page" in caught.value.fix


def test_retry_after_is_checked_and_maintenance_needs_the_proxy(tmp_path: Path):
    (tmp_path / "deploy.toml").write_text("maintenance_retry_after = 0\n")
    with pytest.raises(DeployError) as caught:
        load_settings(tmp_path, environ={})
    assert "'maintenance_retry_after'" in caught.value.message
    (tmp_path / "deploy.toml").write_text("maintenance_retry_after = 45\n")
    settings = load_settings(tmp_path, environ={})
    assert settings.maintenance_retry_after == 45
    with pytest.raises(DeployError) as caught:
        maintenance.require_proxy(settings)
    assert "needs the proxy" in caught.value.message and "nothing was changed" in \
        caught.value.message


# --------------------------------------------------------------------------- on the VM


@pytest.fixture
def proxied(make_app, caddy):  # noqa: F811 (the fixture imported above)
    app = make_app().use_proxy(caddy)
    app.fab_ok("setup")
    return app


def page_file(app: App) -> Path:
    assert app.proxy is not None
    return app.proxy.path(f"conf/maintenance/{app.project}.html")


def only_pages_and_answers(probe: Probe, retry_after: str) -> list[Hit]:
    """The probe's 503s; every other request answered 200 (no connection error, no 502)."""
    bad = [h for h in probe.hits if h.status != 200 and not (
        h.status == 503 and h.retry_after == retry_after)]
    assert bad == [], f"{len(bad)} requests neither served nor a maintenance page: " \
        f"{[(h.status, h.retry_after, h.body[:80]) for h in bad[:5]]}; {probe.summary()}"
    return [h for h in probe.hits if h.status == 503]


def test_maintenance_on_and_off_by_hand(proxied, images):
    app = proxied
    (app.repo / "down.html").write_text("<h1>Back at five</h1>\n")
    app.env.update({"DEPLOY_MAINTENANCE_PAGE": "down.html",
                    "DEPLOY_MAINTENANCE_RETRY_AFTER": "7"})
    app.deploy(images.v1)
    loads = caddy_loads(app)
    with Probe(app) as probe:
        out = app.fab_ok("maintenance", "on")
        time.sleep(1)
        status = app.fab_ok("status")
        off = app.fab_ok("maintenance", "off")
        time.sleep(1)
    assert f"maintenance mode on: {app.host} answer 503 (Retry-After 7s)" in out, out
    assert "maintenance: ON since " in status and "(fab maintenance on)" in status, status
    assert "`fab maintenance off` ends it" in status
    assert "maintenance mode off: requests go to the app" in off
    assert caddy_loads(app) == loads  # on and off load no config: a file Caddy looks for
    pages = only_pages_and_answers(probe, "7")
    print(f"maintenance on/off by hand: {probe.summary()}, {len(pages)} pages")
    # byte for byte
    assert pages and all(h.body == "<h1>Back at five</h1>\n" for h in pages), pages[:1]
    # served, then the page, then served again: on and off are each one change
    changes = [h.status for i, h in enumerate(probe.hits)
               if i == 0 or h.status != probe.hits[i - 1].status]
    assert changes == [200, 503, 200], changes
    assert probe.hits[-1].status == 200 and not page_file(app).exists()
    assert "maintenance: off" in app.fab_ok("status")
    assert "maintenance mode was off" in app.fab_ok("maintenance", "off")
    proc = app.fab("maintenance", "maybe")
    assert proc.returncode == 1 and "error: unknown maintenance action 'maybe'" in output(proc)


def test_a_restore_shows_the_page_not_errors_and_a_downgrade_needs_none(proxied, images):
    app = proxied
    app.deploy(images.v1)
    app.post_item("kept")
    app.deploy(images.v2)  # migrates to 0002; backs up the database (at 0001) first
    backup = [n for n in app.backups() if n.endswith(".sqlite3")][-1]
    app.post_item("after the backup", note="n")

    # The older release serves first (it runs on the newer schema), then the schema goes
    # back under it: every request answered by the app, no page needed.
    with Probe(app) as probe:
        out = app.fab_ok("rollback", f"--tag={images.v1}", "--downgrade")
    print(f"rollback --downgrade: {probe.summary()}")
    assert probe.failed == [], probe.summary()
    assert "maintenance on" not in out, out
    assert probe.versions() == ["2", "1"] and probe.hits[-1].status == 200, probe.summary()
    assert not page_file(app).exists() and app.db_revision() == "0001"

    with Probe(app) as probe:
        out = app.fab_ok("restore", f"--backup={backup}")
    pages = only_pages_and_answers(probe, "30")
    print(f"restore: {probe.summary()}, {len(pages)} pages")
    assert pages and "Down for maintenance" in pages[0].body, probe.summary()
    first, last = probe.hits.index(pages[0]), probe.hits.index(pages[-1])
    assert all(h.status == 503 for h in probe.hits[first:last + 1])  # one window
    assert probe.hits[-1].status == 200, probe.summary()
    assert f"restored {backup}" in out and not page_file(app).exists()
    assert app.item_names() == ["kept"]

    # On by hand before a restore: it stays on after it.
    saved = [n for n in app.backups() if "-pre-restore" in n][-1]
    app.fab_ok("maintenance", "on")
    out = app.fab_ok("restore", f"--backup={saved}")
    assert "maintenance mode is on already" in out and "it stays on after this" in out, out
    assert page_file(app).exists() and "maintenance: ON" in app.fab_ok("status")
    app.fab_ok("maintenance", "off")
    assert app.item_names() == ["kept", "after the backup"]  # the restore was undone


def test_a_restore_cut_short_turns_maintenance_off(proxied, images):
    app = proxied
    app.deploy(images.v1)
    app.post_item("kept")
    app.deploy(images.v2)
    backup = [n for n in app.backups() if n.endswith(".sqlite3")][-1]
    with Probe(app) as probe:
        proc = subprocess.Popen([sys.executable, "-m", "fabric", "restore",
                                 f"--backup={backup}"], cwd=app.repo, env=child_env(app.env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        seen = b""
        try:
            # Ctrl-C once users get the page and the app is being stopped
            deadline = time.monotonic() + 120
            while b"maintenance on" not in seen and time.monotonic() < deadline:
                chunk = proc.stdout.read1(4096)
                if not chunk:
                    break
                seen += chunk
            proc.send_signal(signal.SIGINT)
            out = (seen + proc.communicate(timeout=180)[0]).decode()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert app.wait_http("/version") == 200
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out, out
    assert "maintenance off" in out, out
    assert not page_file(app).exists()
    pages = only_pages_and_answers(probe, "30")
    print(f"restore cut short: {probe.summary()}, {len(pages)} pages")
    assert probe.hits[-1].status == 200 and not (app.vm(".deploy/lock")).exists()


def test_without_the_proxy_maintenance_is_refused_before_any_connection(make_app):
    app = make_app()
    proc = app.fab("maintenance", "on")
    assert proc.returncode == 1, output(proc)
    assert "error: maintenance mode needs the proxy (proxy = true)" in output(proc)
    assert "fix: turn the proxy on" in output(proc)
    assert not app.vm().exists()  # nothing reached the VM
