"""The error of a wrong setting, in the lowest room: the store's own settings (FLOWSTATE_DATABASE_URL,
FLOWSTATE_HOME, migrate --grant-to) raise it as the frame's settings do. bot/frame/config.py gives it its usual name."""


class ConfigError(Exception):
    """A setting or the stack file is wrong; the message names the key and what is wrong."""
