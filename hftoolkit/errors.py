"""The one exception type that means "the user must fix something"."""


class UserError(Exception):
    """Bad input: a recipe, file, column, model or checkpoint the user named.

    The CLI prints the message as a single line and exits with status 2, so the
    message must name the culprit (field, file) and say how to fix it. Line breaks
    in what it quotes back (an override, a file name) are shown as \\n, \\r.
    """

    exit_code = 2

    def __init__(self, message: str = ""):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


class TrainingStopped(Exception):
    """Training stopped on Ctrl-C or SIGTERM after saving a resumable checkpoint (exit status 128 + signal)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + int(signum)
