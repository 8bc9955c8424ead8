"""Settings: defaults, deploy.toml, .env's DEPLOY_* lines, DEPLOY_* variables; strict errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_no_traceback, output

from deploy.errors import DeployError
from deploy.settings import Settings, load_settings


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
    assert load_settings(tmp_path, environ={"DEPLOY_ROLLBACK_ON_FAILURE": "no"}) \
        .rollback_on_failure is False
    with pytest.raises(DeployError) as err:
        load_settings(tmp_path, environ={"DEPLOY_ROLLBACK_ON_FAILURE": "maybe"})
    assert "rollback_on_failure" in err.value.message


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
