"""The remote half: one verified SSH connection per host, and the flows on the VM.

    session.py   which VMs, the verified connection, signals that cut a flow short
    vm.py        the app on one VM: the lock, the release files, queries
    steps.py     the steps of a release (check, pull, backup, migrate, switch, wait, record)
    flows.py     deploy, rollback, restore and the health-checked switch they share
    housekeeping.py  old images and stopped containers pruned, free disk checked before a
                 pull and a backup, the app removed (`fab prune`, `fab remove`)
    phases.py    one release as named, timed phases printed as one line; what cutting one
                 short means
    contract.py  env files compose reads byte for byte; checks of the rendered compose file
    lock.py      the lock holder, its lease renewal
    signals.py   SIGTERM/SIGHUP handled like Ctrl-C, blocks Ctrl-C must not cut in half

Commands come from `deploy.commands.vm`; they run through the same Runner as local ones, so a
dry run prints them all and opens no connection.
"""

from deploy.remote.flows import (
    deploy,
    healthy_after_start,
    last_revision,
    pick_rollback_tag,
    release_entry,
    restore,
    rollback,
    schema_mismatch,
    switch_back,
    switch_checked,
    validate_backup_name,
)
from deploy.remote.lock import describe_holder, lease_is_fresh, parse_holder
from deploy.remote.phases import Release, cut_short
from deploy.remote.session import Target, check_key_file, connect, session, targets
from deploy.remote.signals import Interrupted, sigint_deferred
from deploy.remote.steps import Vm, backups_to_prune

__all__ = [
    "Interrupted", "Release", "Target", "Vm", "backups_to_prune", "check_key_file", "connect",
    "cut_short",
    "deploy", "describe_holder", "healthy_after_start", "last_revision", "lease_is_fresh",
    "parse_holder",
    "pick_rollback_tag", "release_entry", "restore", "rollback", "session", "sigint_deferred",
    "schema_mismatch", "switch_back", "switch_checked", "targets", "validate_backup_name",
]
