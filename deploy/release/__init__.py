"""One release, whatever it goes out to: which kind of release a command makes, decided in one
place (target.py), the switch each kind of host takes (switch.py, one module per kind), and
the releases over several hosts.

    sequence.py   the one sequence of each action over a plan of hosts (a host: a plan of one
                  slot), its phases in one order whatever the target
    target.py     the release's kind (one host after another, roles in batches, a Swarm stack)
                  and each host's switch (compose, blue/green behind Caddy, `stack deploy`)
    switch.py     the health-checked switch of one host, whatever its kind
    recreate.py   kind `compose`: the service recreated in place; the switch back
    bluegreen.py  kind `proxy`: the blue/green switch behind Caddy, and the proxy's tasks
    proxyform.py  the web service's form behind the proxy, and the override the tool writes
    swarm.py      kind `swarm`: the stack file, `docker stack deploy`, Swarm's convergence
    maintenance.py  maintenance mode behind the proxy (`fab maintenance`, `fab restore`)
    roles.py      several hosts in batches (its model, with no VM, in roleplan.py)
    dbplace.py    where the database lives; the layouts refused
"""
