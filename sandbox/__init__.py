"""This repo's deploy target on this machine (engine, registry, sandbox VMs) and `inv demo`.

Not part of the installed package (pyproject ships only `deploy*`): adopters never see it.
`python -m sandbox up|down|status`; this repo's tasks.py adds `inv sandbox` and `inv demo`.
"""

from sandbox.box import Sandbox, down, sandbox, status, up

__all__ = ["Sandbox", "down", "sandbox", "status", "up"]
