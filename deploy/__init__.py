"""Deploy toolkit: catch everything on the laptop, then deploy.

The logic lives in this package; `tasks.py` and `fabfile/` only wire it up.
"""

__version__ = "0.1.0"
