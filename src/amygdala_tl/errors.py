"""The one exception type for mistakes a user can make; the CLI prints it as one line, exit code 2."""


class UserError(Exception):
    """Bad input (path, value, file content): the message names the offending file or value."""
