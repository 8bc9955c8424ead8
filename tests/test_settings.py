"""Settings: defaults, deploy.toml, .env's DEPLOY_* lines, DEPLOY_* variables; strict errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_no_traceback, child_env, output

from deploy.core.errors import DeployError
from deploy.core.settings import Settings, load_settings


def write(root: Path, name: str, text: str) -> None:
    (root / name).write_text(text)


def test_defaults_without_any_file(tmp_path):
    s = load_settings(tmp_path, environ={})
    assert s.root == tmp_path.resolve()
    assert s.platform == "linux/amd64"
    assert s.dockerfile == "Dockerfile"
    assert s.port == 22
    assert s.rollback_on_failure is True
    assert s.database == "sqlite"
    assert s.lock_backend == "pip-tools"
    assert s.image == ""


def test_deploy_toml_values_are_read_and_typed(tmp_path):
    write(tmp_path, "deploy.toml", 'image = "reg:5000/app"\nport = 2222\nboot_timeout = 5\n'
          "rollback_on_failure = false\n")
    s = load_settings(tmp_path, environ={})
    assert s.image == "reg:5000/app"
    assert s.port == 2222
    assert s.boot_timeout == 5.0
    assert s.rollback_on_failure is False


def test_example_deploy_toml_loads(example_repo):
    s = load_settings(example_repo, environ={})
    assert s.image == "127.0.0.1:5000/example"
    assert (s.host, s.port) == ("vm1", 22)  # sandbox VM 1 (python -m sandbox up)
    assert s.app_dir == "/srv/example"


def test_precedence_environment_beats_dotenv_beats_toml(tmp_path):
    write(tmp_path, "deploy.toml", 'service = "from-toml"\nuser = "toml-user"\nport = 1\n')
    write(tmp_path, ".env", "DEPLOY_SERVICE=from-dotenv\nDEPLOY_PORT=2\nAPP_SECRET=x\n")
    s = load_settings(tmp_path, environ={"DEPLOY_SERVICE": "from-environment"})
    assert s.service == "from-environment"  # environment > .env > toml
    assert s.port == 2  # .env > toml
    assert s.user == "toml-user"  # toml > default


def test_env_file_setting_chooses_the_dotenv_file(tmp_path):
    write(tmp_path, "deploy.toml", 'env_file = "prod.env"\n')
    write(tmp_path, "prod.env", "DEPLOY_SERVICE=web\n")
    write(tmp_path, ".env", "DEPLOY_SERVICE=ignored\n")
    assert load_settings(tmp_path, environ={}).service == "web"


def test_unknown_key_in_toml_names_it_and_suggests(tmp_path):
    write(tmp_path, "deploy.toml", 'imgae = "x"\n')
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={})
    assert "'imgae'" in err.value.message
    assert "deploy.toml" in err.value.message
    assert "did you mean 'image'" in err.value.fix


def test_unknown_key_without_a_close_match_lists_known_keys(tmp_path):
    write(tmp_path, "deploy.toml", 'zzzqqq = 1\n')
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={})
    assert "'zzzqqq'" in err.value.message
    assert "known keys:" in err.value.fix and "image" in err.value.fix


def test_unknown_key_in_environment_names_the_variable(tmp_path):
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={"DEPLOY_HOTS": "1.2.3.4"})
    assert "'hots'" in err.value.message
    assert "DEPLOY_HOTS" in err.value.message
    assert "did you mean 'host'" in err.value.fix


def test_unknown_key_in_dotenv_names_the_file(tmp_path):
    write(tmp_path, ".env", "DEPLOY_IMAGEE=x\n")
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={})
    assert "'imagee'" in err.value.message and ".env" in err.value.message


def test_sandbox_variables_are_not_settings(tmp_path):
    s = load_settings(tmp_path, environ={"DEPLOY_SANDBOX_KEEP": "1"})
    assert s == Settings(root=tmp_path.resolve())


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ('port = "abc"', "port", "a whole number"),
        ('rollback_on_failure = "maybe"', "rollback_on_failure", "true or false"),
        ("boot_timeout = true", "boot_timeout", "a number"),
        ("image = 5", "image", "a string"),
    ],
)
def test_wrong_type_in_toml_is_rejected(tmp_path, toml, key, expected):
    write(tmp_path, "deploy.toml", toml + "\n")
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={})
    assert f"'{key}'" in err.value.message
    assert expected in err.value.message


def test_wrong_type_in_environment_is_rejected(tmp_path):
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={"DEPLOY_PORT": "abc"})
    assert "'port'" in err.value.message and "'abc'" in err.value.message


def test_bool_strings_from_environment(tmp_path):
    for text, value in (("false", False), ("0", False), ("true", True), ("1", True)):
        assert load_settings(tmp_path, environ={"DEPLOY_ROLLBACK_ON_FAILURE": text}) \
            .rollback_on_failure is value
    for text in ("maybe", "no", "yes", "on", "True", " 1", ""):
        with pytest.raises(DeployError) as err:
            load_settings(tmp_path, environ={"DEPLOY_ROLLBACK_ON_FAILURE": text})
        assert "rollback_on_failure" in err.value.message


def test_a_quoted_bool_in_toml_is_refused(tmp_path):
    """proxy = "yes" | before: taken as true | error naming proxy and deploy.toml."""
    for text in ('"yes"', '"true"', "1"):
        write(tmp_path, "deploy.toml", f"proxy = {text}\n")
        with pytest.raises(DeployError) as err:
            load_settings(tmp_path, environ={})
        assert "setting 'proxy' in deploy.toml must be true or false" in err.value.message


def test_choices_are_enforced(tmp_path):
    write(tmp_path, "deploy.toml", 'database = "mysql"\n')
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={})
    assert "'database'" in err.value.message
    assert "sqlite, postgres, none" in err.value.message
    assert "'mysql'" in err.value.message


def test_malformed_dotenv_line_is_an_error_naming_the_line(tmp_path):
    write(tmp_path, ".env", "APP_SECRET=x\nthis line is not a binding\nOTHER=1\n")
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={})
    assert ".env line 2" in err.value.message
    assert "this line is not a binding" in err.value.message


def test_invalid_toml_is_an_error(tmp_path):
    write(tmp_path, "deploy.toml", "image = \n")
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={})
    assert "deploy.toml is not valid TOML" in err.value.message


def test_require_names_the_missing_setting(tmp_path):
    s = load_settings(tmp_path, environ={})
    with pytest.raises(DeployError) as err:
        s.require("host")
    assert "'host'" in err.value.message and "DEPLOY_HOST" in err.value.fix


def test_inv_config_redacts_the_registry_password(example_repo, inv):
    proc = inv(example_repo, "config",
               env={"DEPLOY_REGISTRY_PASSWORD": "hunter2-secret", "DEPLOY_REGISTRY_USER": "bob"})
    assert proc.returncode == 0, output(proc)
    assert "hunter2-secret" not in output(proc)
    assert "registry_password = '***'" in proc.stdout
    assert "registry_user = 'bob'" in proc.stdout
    assert "image = '127.0.0.1:5000/example'" in proc.stdout


def test_inv_config_unknown_key_is_a_one_line_error(example_repo, inv):
    with (example_repo / "deploy.toml").open("a") as f:
        f.write('servce = "app"\n')
    proc = inv(example_repo, "config")
    assert proc.returncode == 1
    errors = [line for line in output(proc).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output(proc)
    assert "'servce'" in errors[0]
    assert "did you mean 'service'" in output(proc)
    assert_no_traceback(proc)


# -- ranges and shapes (deploy/core/settingsrules.py): each bad value is refused when the settings
# are read, before anything connects. Table: setting = value | before | now.


def refused(tmp_path: Path, toml: str = "", environ: dict[str, str] | None = None) -> DeployError:
    write(tmp_path, "deploy.toml", toml)
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ=environ or {})
    return err.value


@pytest.mark.parametrize("value", ["0", "-1"])
def test_keep_backups_below_one_is_refused(tmp_path, value):
    """keep_backups = 0 | before: a deploy deleted 8 of 9 backups, the one it had just taken
    included | error: keep_backups must be 1 or more."""
    err = refused(tmp_path, f"keep_backups = {value}\n")
    assert "setting 'keep_backups' in deploy.toml must be 1 or more" in err.message
    assert "keep at least 1" in err.fix
    assert load_settings(tmp_path, environ={"DEPLOY_KEEP_BACKUPS": "1"}).keep_backups == 1


@pytest.mark.parametrize("app_dir", [
    "/", "", "/srv/../etc", "/root", "srv/app", "/srv/adv-x/../adv-demo", "/etc/app",
    "/usr/local/app", "/var", "/home", "/tmp", "/srv/app/", "/srv//app", "/srv/./app",
    "/proc/1", "/srv/a\nb", "/dev", "/boot", "/sys",
])
def test_app_dir_must_be_an_apps_own_absolute_directory(tmp_path, app_dir):
    """app_dir = / "" /srv/../etc /root, relative | before: accepted, the dry run wrote
    /compose.yaml | error naming app_dir."""
    err = refused(tmp_path, environ={"DEPLOY_APP_DIR": app_dir})
    assert err.message.startswith("setting 'app_dir' in the environment (DEPLOY_APP_DIR) must "
                                  "be an app's own directory on the VM"), err.message
    assert err.fix


@pytest.mark.parametrize("app_dir", ["/srv/app", "/srv/t-x", "/home/bob/app", "/opt/shop",
                                     "/var/www/shop", "/srv/my app"])
def test_ordinary_app_dirs_pass(tmp_path, app_dir):
    assert load_settings(tmp_path, environ={"DEPLOY_APP_DIR": app_dir}).app_dir == app_dir


@pytest.mark.parametrize(("key", "value"), [
    ("compose_file", "../x.yaml"), ("compose_file", "/etc/compose.yaml"),
    ("compose_file", "sub dir/compose.yaml"), ("compose_file", ""),
    ("sqlite_path", "/etc/passwd"), ("sqlite_path", "../other/app.db"),
    ("sqlite_path", "data/../../x.db"), ("sqlite_path", "~/x.db"),
])
def test_files_the_tool_writes_stay_inside_app_dir(tmp_path, key, value):
    """compose_file = "../x.yaml", sqlite_path = "/etc/passwd" | before: written outside
    app_dir before the refusal (or accepted) | error naming the key, nothing connects."""
    err = refused(tmp_path, f"{key} = {value!r}\n".replace("'", '"'))
    assert err.message.startswith(f"setting '{key}' in deploy.toml must"), err.message


def test_sqlite_path_in_a_subdirectory_passes(tmp_path):
    write(tmp_path, "deploy.toml", 'sqlite_path = "data/db/app.db"\ncompose_file = "c.yaml"\n')
    assert load_settings(tmp_path, environ={}).sqlite_path == "data/db/app.db"


@pytest.mark.parametrize("value", [
    "app.test\nX", 'app".test', "app.test}", "*.app.test", "app.test:80", "App.Test",
    "a/../b", "app.test, ", "-app.test", "app_x.test",
])
def test_proxy_host_must_be_host_names(tmp_path, value):
    """proxy_host with a newline, quotes, }, *, :80, upper case, /../ | before: written into
    Caddy's config verbatim | error naming proxy_host."""
    err = refused(tmp_path, environ={"DEPLOY_PROXY_HOST": value})
    assert "setting 'proxy_host' in the environment" in err.message
    assert "must be host names" in err.message


def test_proxy_host_list_passes(tmp_path):
    s = load_settings(tmp_path, environ={"DEPLOY_PROXY_HOST": "app.test, www.app.test,x-1.io"})
    assert s.proxy_host == "app.test, www.app.test,x-1.io"


@pytest.mark.parametrize("url", [
    "http://example.com/health", "ftp://127.0.0.1/health", "127.0.0.1:8000/health",
    "http://10.0.0.9:8000/health", "http://user:pw@127.0.0.1/h", "http://127.0.0.1:99999/h",
    "http://127.0.0.1/ h",
])
def test_health_url_must_be_http_on_the_vm(tmp_path, url):
    """health_url on another host or ftp:// | before: accepted | error naming health_url."""
    err = refused(tmp_path, 'host = "vm1"\n', {"DEPLOY_HEALTH_URL": url})
    assert "setting 'health_url' in the environment" in err.message
    assert "on the VM itself" in err.message


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/health", "https://localhost/health", "http://[::1]:80/h",
    "http://vm1:8000/health", "http://127.0.0.2/h", "http://web2.example.com/h",
])
def test_health_url_on_the_vm_passes(tmp_path, url):
    toml = 'host = "root@vm1:22"\n[roles.web]\nhosts = ["deploy@web2.example.com:2222"]\n'
    write(tmp_path, "deploy.toml", toml)
    assert load_settings(tmp_path, environ={"DEPLOY_HEALTH_URL": url}).health_url == url


@pytest.mark.parametrize(("key", "value"), [
    ("health_timeout", "-5"), ("network_timeout", "0"), ("connect_timeout", "0"),
    ("lock_lease", "-1"), ("boot_timeout", "0"), ("swarm_timeout", "-3"),
])
def test_timeouts_must_be_positive(tmp_path, key, value):
    """health_timeout = -5, network_timeout = 0 | before: accepted | error naming the key."""
    err = refused(tmp_path, environ={f"DEPLOY_{key.upper()}": value})
    assert f"setting '{key}' in the environment" in err.message
    assert "above 0" in err.message


@pytest.mark.parametrize(("key", "value"), [("port", "0"), ("port", "70000"),
                                            ("keep_releases", "0"), ("batch_wait", "-1")])
def test_other_numbers_in_range(tmp_path, key, value):
    err = refused(tmp_path, environ={f"DEPLOY_{key.upper()}": value})
    assert f"setting '{key}' in the environment" in err.message


def test_a_short_registry_password_is_refused(tmp_path):
    """registry_password = "x" | before: accepted, and redacting it mangled every x of the
    output (`ne***t deploy`) | error: shorter than 8 characters, never showing it."""
    err = refused(tmp_path, environ={"DEPLOY_REGISTRY_PASSWORD": "x"})
    assert "'registry_password'" in err.message and "shorter than 8" in err.message
    assert "'x'" not in err.message and "'x'" not in err.fix
    s = load_settings(tmp_path, environ={"DEPLOY_REGISTRY_PASSWORD": "long-enough"})
    assert s.registry_password == "long-enough"


def test_defaults_and_the_examples_pass_the_ranges():
    from conftest import EXAMPLE

    load_settings(EXAMPLE, environ={})
    load_settings(EXAMPLE.parent / "example-postgres", environ={})


def test_a_bad_setting_stops_fab_before_it_connects(example_repo):
    """fab setup with keep_backups = 0 and a host that does not exist | one error: naming the
    key, no traceback, no connection attempted (the host would fail to resolve)."""
    proc = fab_setup_unreachable(example_repo, {"DEPLOY_KEEP_BACKUPS": "0"})
    assert proc.returncode == 1, output(proc)
    assert_no_traceback(proc)
    errors = [line for line in output(proc).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'keep_backups'" in errors[0], output(proc)
    assert "no-such-host" not in output(proc)


def test_fab_setup_refuses_a_service_the_compose_file_lacks(example_repo):
    """service = "nosuch" | before: `fab setup` uploaded everything | one error naming the
    service, before any connection (the host would not resolve)."""
    proc = fab_setup_unreachable(example_repo, {"DEPLOY_SERVICE": "nosuch"})
    assert proc.returncode == 1, output(proc)
    assert_no_traceback(proc)
    assert "error: setting 'service' is 'nosuch', which compose.yaml does not define (it has: " \
        "app)" in proc.stderr, output(proc)
    assert "no-such-host" not in output(proc)


def fab_setup_unreachable(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`fab setup` in `repo` with `env`, aimed at a host that does not resolve: whatever it
    says came before any connection."""
    (repo / "fabfile").mkdir(exist_ok=True)
    (repo / "fabfile" / "__init__.py").write_text("from deploy.cli.fabtasks import ns\n")
    return subprocess.run([sys.executable, "-m", "fabric", "setup"], cwd=repo,
                          env=child_env({**env, "DEPLOY_HOST": "no-such-host.invalid"}),
                          capture_output=True, text=True, timeout=120, check=False)
