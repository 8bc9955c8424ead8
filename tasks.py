"""This repo's own tasks: the toolkit's tasks, run on the app in the working directory."""

from deploy.tasks import ns  # noqa: F401
