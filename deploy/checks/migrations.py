"""migrations: one Alembic head, and the models match the migrations (the create_all trap).

Migrates a scratch database from empty to head, then runs `alembic check`: a model change
without a migration fails here instead of in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.checks import CheckResult, failed, passed
from deploy.settings import Settings


def migrations(settings: Settings) -> CheckResult:
    name = "migrations"
    ini = settings.path(settings.alembic_ini)
    if not ini.exists():
        return passed(name, f"no {settings.alembic_ini}: nothing to check")
    with tempfile.TemporaryDirectory(prefix="deploy-check-") as scratch:
        url = settings.check_database_url or f"sqlite:///{Path(scratch) / 'scratch.db'}"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "deploy.checks.alembic_probe", str(ini), url,
                 settings.database_url_env],
                cwd=ini.parent, capture_output=True, text=True, timeout=300, check=False,
                # No __pycache__ left in the app's tree (git-clean would then fail).
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
        except subprocess.TimeoutExpired:
            return failed(name, "migrating the scratch database took over 300s", "look at why")
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return failed(name, f"alembic could not run: {err[:160]}", "run `alembic heads` to see why")
    if result["step"] == "heads":
        heads = result["heads"]
        if not heads:
            return failed(name, "Alembic has no revisions", "create one: alembic revision -m init")
        return failed(
            name,
            f"{len(heads)} Alembic heads ({', '.join(heads)}): `alembic upgrade head` would fail",
            f"merge them: alembic merge -m merge {' '.join(heads)}",
        )
    if result["step"] == "upgrade":
        return failed(
            name,
            f"migrating an empty database to head failed: {result['message'][:160]}",
            "fix the failing migration (run `alembic upgrade head` on a scratch database)",
        )
    if result["step"] == "check":
        diffs = " ".join(result["message"].split())
        return failed(
            name,
            f"the models differ from the migrations: {diffs[:160]}",
            'write the migration: alembic revision --autogenerate -m "..."',
        )
    return passed(name, f"one head ({result['heads'][0]}); models match the migrations")
