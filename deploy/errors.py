"""The one exception type the toolkit raises for failures a user can act on."""


class DeployError(Exception):
    """A failure the user can act on: what went wrong and how to fix it."""

    def __init__(self, message: str, fix: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
