"""Errors that reach the user as a message, never as a traceback."""


class NextbestError(Exception):
    """An error whose message is written for the person who ran the command.

    The CLI prints the message and exits non-zero; library callers can catch it to handle bad input.
    """


class DataContractError(NextbestError):
    """A table does not meet the data contract (missing column, wrong type, unreadable file, ...)."""
