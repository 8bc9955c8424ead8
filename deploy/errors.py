"""The one exception type the toolkit raises for failures a user can act on."""


class DeployError(Exception):
    """A failure the user can act on: what went wrong and how to fix it."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
