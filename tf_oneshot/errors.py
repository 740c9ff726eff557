"""Errors that end a command with one clear line."""


class UserError(ValueError):
    """Bad user input: the message says what is wrong and what would be right."""
