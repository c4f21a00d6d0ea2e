"""The one exception type the command line turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a path): the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A setting outside what it accepts, raised by a config's own checks (``__post_init__``). A ``ValueError`` too,
    so tyro and the YAML reader report it as the bad value of the option they were reading."""
