"""This repo's own tasks: the toolkit's tasks (run on the app in the working directory), plus
`inv sandbox` and `inv demo`, which live in the repo's `sandbox/` package, not in the library
(imported when they run, so that `inv --list` loads none of it)."""

from invoke import Context, task

from deploy.cli.tasks import ns
from deploy.core.errors import friendly


@task(help={"vms": "how many VMs (vm1..vmN, default 1; more running are left alone)",
            "stop": "stop the VMs and what else the sandbox started"})
@friendly
def sandbox(c: Context, vms: int = 1, stop: bool = False) -> None:
    """Start (idempotently) a deploy target here: engine, registry, images and VMs vm1..vmN."""
    import sandbox as sb

    if stop:
        sb.down()
    else:
        sb.up(vms=vms)


@task(help={"postgres": "the Postgres example (pgvector), and a restore at the end",
            "dry-run": "no sandbox: print each step's commands (the steps that have a dry run)",
            "work": "the demo app's directory (default: in the sandbox's state directory)"})
@friendly
def demo(c: Context, postgres: bool = False, dry_run: bool = False, work: str = "") -> None:
    """Sandbox, then deploy the example v1, v2 (adds a column), roll back to v1."""
    from pathlib import Path

    from sandbox.demo import run_demo

    run_demo(Path(work) if work else None, postgres=postgres, dry_run=dry_run)


ns.add_task(sandbox)
ns.add_task(demo)
