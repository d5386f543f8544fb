"""The one exception type users see: a one-line message saying what is wrong and what to do."""


class UserError(Exception):
    """Bad input from the user (files, names, shapes). The CLI prints it on one line and exits with code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it to one line so the CLI never prints a wall of text.
        super().__init__(" ".join(str(message).split()))
