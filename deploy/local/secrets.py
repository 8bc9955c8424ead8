"""Secrets from commands: `[secrets]` in deploy.toml maps the app's variables to commands run
on the laptop, whose standard output is the value.

```toml
[secrets]
APP_SECRET = "pass show app/secret"
STRIPE_KEY = "op read op://prod/stripe/key"
DB_PASSWORD = "aws secretsmanager get-secret-value --secret-id db --query SecretString"
```

`fab setup` runs them and writes the values into the VM's app.env (over the env file's), and
`fab env-sync` runs them again and sets each key there (as `fab env set` does), so a rotated
secret reaches the VM without the env file. A value travels only on stdin to the VM, never on
an argv there, and is never printed (`-v` shows the commands, each value as `***`). A
destination's `[destinations.NAME.secrets]` goes over `[secrets]`. One trailing newline of the
output is dropped (`pass` and `op` end with one); a value with another line break is refused.
"""

from __future__ import annotations

from deploy.core.destinations import subtable
from deploy.core.errors import DeployError
from deploy.core.runner import Runner, redact, sh
from deploy.core.settings import SETTINGS_FILE, Settings
from deploy.vm import appenvfile

TABLE = "secrets"


def commands(settings: Settings) -> dict[str, str]:
    """KEY -> command, checked (the destination's over the top level's)."""
    out: dict[str, str] = {}
    for key, command in subtable(settings.root, settings.destination, TABLE).items():
        appenvfile.validate_key(key)
        if not isinstance(command, str) or not command.strip():
            raise DeployError(f"secret {key} in {SETTINGS_FILE} must be a command (a string)",
                              f'write it as {key} = "pass show app/{key.lower()}"')
        out[key] = command
    return out


def resolve(settings: Settings, runner: Runner) -> dict[str, str]:
    """Run every secret's command on the laptop; KEY -> value. Each value joins the runner's
    secrets (redacted in anything it prints). A dry run runs none of them."""
    values: dict[str, str] = {}
    for key, command in commands(settings).items():
        result = runner.run(sh(command), hide=True, check=False,
                            cwd=str(settings.root))
        if runner.dry_run:
            continue
        value = result.stdout[:-1] if result.stdout.endswith("\n") else result.stdout
        if value.endswith("\r"):
            value = value[:-1]
        if value:
            runner.secrets.append(value)
        if not result.ok:
            stderr = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise DeployError(f"the command for secret {key} failed (exit {result.exited}): "
                              f"{redact(stderr, runner.secrets) or 'no message'}; nothing was sent "
                              "to the VM", f"fix `{command}` in [{TABLE}] of {SETTINGS_FILE}")
        if not value:
            raise DeployError(f"the command for secret {key} printed nothing; nothing was "
                              "sent to the VM", f"check `{command}` in [{TABLE}]")
        try:
            appenvfile.validate_value(value)
        except DeployError as exc:
            raise DeployError(f"the value of secret {key}: {exc.message}",
                              "the command must print a one-line value") from None
        values[key] = value
    return values
