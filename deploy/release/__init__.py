"""One release, whatever it goes out to: which kind of release a command makes, decided in one
place (target.py), and the switch each kind of host takes (switch.py).

    target.py   the release's kind (one host after another, roles in batches, a Swarm stack)
                and each host's switch (compose, blue/green behind Caddy, `stack deploy`)
    switch.py   the health-checked switch of one host, whatever its kind; the switch back
"""
