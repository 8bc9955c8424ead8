"""Destinations: [destinations.NAME] tables of deploy.toml merged over the rest, chosen by
DEPLOY_DESTINATION for every task; each its own hosts, app_dir, lock and release history; and
`fab promote --from=staging`, which deploys the digest staging serves healthy, with no build."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from vmkit import output, unique

from deploy.core.errors import DeployError
from deploy.core.settings import load_settings

DESTINATIONS = """
[secrets]
APP_SECRET = "echo base"

[destinations.staging]
host = "staging.example.com"
app_dir = "/srv/app-staging"
env_file = ".env.staging"

[destinations.staging.secrets]
APP_SECRET = "echo staging"

[destinations.production]
host = "prod.example.com"
"""


def repo_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "deploy.toml").write_text('image = "reg.example.com/app"\napp_dir = "/srv/app"\n'
                                          + text)
    return tmp_path


def test_a_destination_table_goes_over_the_base_and_the_environment_over_both(
        tmp_path: Path) -> None:
    from deploy.local import secrets

    root = repo_with(tmp_path, DESTINATIONS)
    base = load_settings(root, environ={})
    assert (base.destination, base.host, base.app_dir) == ("", "", "/srv/app")
    staging = load_settings(root, environ={"DEPLOY_DESTINATION": "staging"})
    assert (staging.destination, staging.host, staging.app_dir, staging.env_file) == \
        ("staging", "staging.example.com", "/srv/app-staging", ".env.staging")
    assert secrets.commands(staging) == {"APP_SECRET": "echo staging"}
    assert secrets.commands(base) == {"APP_SECRET": "echo base"}
    prod = load_settings(root, environ={"DEPLOY_DESTINATION": "production",
                                        "DEPLOY_APP_DIR": "/srv/other"})
    assert (prod.host, prod.app_dir) == ("prod.example.com", "/srv/other")
    # the base env file may choose it too (the environment wins)
    (root / ".env").write_text("DEPLOY_DESTINATION=production\n")
    assert load_settings(root, environ={}).host == "prod.example.com"
    assert load_settings(root, environ={"DEPLOY_DESTINATION": "staging"}).host == \
        "staging.example.com"


@pytest.mark.parametrize(("text", "environ", "message"), [
    (DESTINATIONS, {"DEPLOY_DESTINATION": "stagign"},
     "there is no destination 'stagign' in deploy.toml (known: staging, production)"),
    ("[destinations.staging]\nhots = \"x\"\n", {"DEPLOY_DESTINATION": "staging"},
     "unknown setting 'hots' in [destinations.staging] of deploy.toml"),
    ("[destinations.staging]\nport = \"x\"\n", {"DEPLOY_DESTINATION": "staging"},
     "setting 'port' in [destinations.staging] of deploy.toml must be a whole number"),
    ("[destinations.staging]\nhost = \"a\"\n[destinations.prod]\nhost = \"a\"\n",
     {"DEPLOY_DESTINATION": "prod"},
     "destinations 'prod' and 'staging' both deploy to /srv/app on a"),
    ("[destinations.Staging]\nhost = \"a\"\n", {"DEPLOY_DESTINATION": "Staging"},
     "'Staging' is not a destination name"),
])
def test_bad_destinations_are_refused_naming_what(tmp_path: Path, text: str,
                                                  environ: dict[str, str], message: str) -> None:
    root = repo_with(tmp_path, text)
    with pytest.raises(DeployError) as caught:
        load_settings(root, environ=environ)
    assert message in caught.value.message


def registry_writes(log: Path, name: str, tag: str) -> int:
    """Manifest uploads of `name:tag` the sandbox registry has logged (the session's
    repository gets other workers' tags meanwhile: only this tag's pushes count)."""
    lines = log.read_text(errors="replace").splitlines()
    return sum(f"PUT /v2/{name}/manifests/{tag} " in line for line in lines)


def test_staging_and_production_and_a_promotion_without_a_build(make_app, images, two_vms,
                                                                 sandbox) -> None:
    vm1, vm2 = two_vms
    staging = make_app(vm=vm1)
    prod = dataclasses.replace(staging, app_dir=f"/srv/{unique('t-')}", machine=vm2,
                               env=dict(staging.env), tunnel=None, tunnel_port=0)
    for app in (staging, prod):  # a loaded machine (shared VMs) slows the health checks
        app.env["DEPLOY_HEALTH_TIMEOUT"] = "150"
    try:
        for app, name in ((staging, "staging"), (prod, "production")):
            del app.env["DEPLOY_HOST"], app.env["DEPLOY_APP_DIR"]  # the tables say them
            app.env["DEPLOY_DESTINATION"] = name
        with open(staging.repo / "deploy.toml", "a") as handle:
            handle.write(f'\n[destinations.staging]\nhost = "{vm1.address}"\n'
                         f'app_dir = "{staging.app_dir}"\n'
                         f'\n[destinations.production]\nhost = "{vm2.address}"\n'
                         f'app_dir = "{prod.app_dir}"\n')
        config = staging.inv("config")
        assert config.returncode == 0, output(config)
        assert "[destinations.staging] merged over it" in config.stdout
        assert f"host = '{vm1.address}'" in config.stdout
        assert "destination = 'staging'" in config.stdout

        for app in (staging, prod):
            app.fab_ok("setup")
        prod.deploy(images.v1)
        staging.deploy(images.v2)
        assert staging.version()["version"] == "2"
        assert prod.version()["version"] == "1"
        staged = staging.history()[-1]

        # staging is not healthy: refused, production untouched
        assert staging.vm_compose("stop", "app").returncode == 0
        before = prod.snapshot()
        refused = prod.fab("promote", "--from=staging")
        assert refused.returncode == 1, output(refused)
        assert f"staging ({vm1.address}) does not serve {images.v2} healthy" in refused.stderr
        assert "nothing was deployed" in refused.stderr
        assert prod.snapshot() == before
        assert staging.vm_compose("start", "app").returncode == 0
        assert staging.wait_http("/health") == 200

        # two locks: staging's, held by a deploy from elsewhere, stops staging only
        holder = {"holder": "someone@elsewhere", "host": "elsewhere", "pid": 1, "tag": "x",
                  "action": "deploy", "message": "", "time": "2026-01-01T00:00:00Z"}
        staging.vm(".deploy/lock").mkdir()
        staging.vm(".deploy/lock/holder.json").write_text(json.dumps(holder))
        blocked = staging.fab("deploy", f"--tag={images.v1}")
        assert blocked.returncode != 0 and "someone@elsewhere" in output(blocked)
        # the hooks hear of the promotion
        hooks = staging.repo / ".deploy" / "hooks"
        hooks.mkdir(parents=True)
        (hooks / "pre-deploy").write_text(
            "#!/bin/sh\nenv | grep '^RELEASE_' > \"$HOOK_OUT\"\n")
        (hooks / "pre-deploy").chmod(0o755)
        hook_out = staging.repo.parent / "pre-deploy.env"

        log = sandbox.state_dir / "registry.log"
        pushes = registry_writes(log, images.name, images.v2)
        tags = json.dumps(sorted(images.tags))
        promoted = prod.fab("promote", "--from=staging", "--message", "go",
                            env={"HOOK_OUT": str(hook_out)})
        assert promoted.returncode == 0, output(promoted)
        assert f"[staging] serves {images.ref(images.v2)} healthy on {vm1.address}" in \
            promoted.stdout
        assert registry_writes(log, images.name, images.v2) == pushes  # nothing pushed
        assert json.dumps(sorted(images.tags)) == tags
        assert prod.version() == {"version": "2", "revision": "0002"}
        record = prod.history()[-1]
        assert (record["tag"], record["digest"]) == (images.v2, staged["digest"])
        assert record["message"] == f"go (promoted from staging ({staged['digest'][:19]}))"
        # two histories, two locks: each in its destination's app_dir on its own VM
        assert [e["tag"] for e in staging.history()] == [images.v2]
        assert [e["tag"] for e in prod.history()] == [images.v1, images.v2]
        assert staging.history()[-1] == staged
        assert json.loads(staging.vm(".deploy/lock/holder.json").read_text()) == holder
        assert not prod.vm(".deploy/lock").exists()
        seen = dict(line.split("=", 1) for line in hook_out.read_text().splitlines())
        assert (seen["RELEASE_ACTION"], seen["RELEASE_DESTINATION"]) == ("promote", "production")
        assert (seen["RELEASE_TAG"], seen["RELEASE_DIGEST"]) == (images.v2, staged["digest"])
        assert (seen["RELEASE_PREVIOUS_TAG"], seen["RELEASE_HOSTS"]) == (images.v1, vm2.address)
        assert prod.vm(".deploy").is_dir() and staging.vm(".deploy").is_dir()
        assert not prod.machine.host_path(staging.app_dir).exists()
        assert not staging.machine.host_path(prod.app_dir).exists()
        status = prod.fab_ok("status")
        assert f"host:      {vm2.address}" in status and "lock:      free" in status

        same = staging.fab("promote", "--from=staging")
        assert same.returncode == 1
        assert "'staging' is the destination this command deploys to" in same.stderr
    finally:
        prod.tear_down()
