"""The VM side: one verified SSH connection per host, the persistent shell on it, and the
flows on the VM.

    session.py   which VMs, the verified connection, and the Vm on it
    shell.py     one long-lived `sh` per connection, with its keepalives
    vm.py        the app on one VM: the deploy lock held, the release files, queries
    steps.py     the steps of a release (check, pull, backup, migrate, switch, wait, record)
    flows.py     deploy, rollback, restore and the health-checked switch they share
    housekeeping.py  old images and stopped containers pruned, free disk checked before a
                 pull and a backup, the app removed (`fab prune`, `fab remove`)
    phases.py    one release as named, timed phases printed as one line; what cutting one
                 short means
    contract.py  env files compose reads byte for byte; checks of the rendered compose file
    facts.py     what a release's checks need to know of the VM, in one round trip
    health.py    the health wait's decisions, one poll at a time
    matching.py  which release serves after `fab restore`
    deploylock.py  the deploy lock's holder record and its lease renewal
    signals.py   SIGTERM/SIGHUP handled like Ctrl-C, blocks Ctrl-C must not cut in half
    appenvfile.py  the VM's app.env: parity with the release's .env.example, `fab env`
    console.py   commands in the app container (`fab exec`, `fab shell`, aliases)
    vm_helper.sh the POSIX helper the VM runs: every step longer than one command

Commands come from `deploy.commands.vm`; they run through the same Runner as local ones, so a
dry run prints them all and opens no connection. This package's __init__ imports nothing:
import each module by its own name.
"""
