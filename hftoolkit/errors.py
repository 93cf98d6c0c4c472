"""The one exception type that means "the user must fix something"."""


class UserError(Exception):
    """Bad input: a recipe, file, column, model or checkpoint the user named.

    The CLI prints the message as a single line and exits with status 2, so the
    message must name the culprit (field, file) and say how to fix it.
    """

    exit_code = 2
