"""Errors that end a command with one clear line."""


class UserError(ValueError):
    """Bad user input: the message says what is wrong and what would be right."""


def require_positive(name: str, value: object) -> None:
    """Raises the one-line UserError of a flag `--name` that must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"--{name}={value} is invalid; it must be a positive integer.")
