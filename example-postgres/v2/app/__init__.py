"""Example app deployed by the toolkit's tests and demo."""

__version__ = "2"
