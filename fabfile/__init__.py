"""This repo's fabfile: the toolkit's remote tasks, for the app in the working directory."""

from deploy.cli.fabtasks import ns  # noqa: F401
