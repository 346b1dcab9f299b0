class UserError(Exception):
    """Bad input from the user: the message names the file / key / value and what would be valid."""
