"""`ConfigError`: the error every refused setting raises, in a module of its own so that every part of
the configuration (schema, durations, method settings, package files) and everything above it can
raise it without importing the schema (no import cycle inside `lth.config`)."""


class ConfigError(ValueError):
    """A setting has a value that is not allowed. The message names the setting, the value and
    what is allowed; the entry point prints it without a traceback."""
