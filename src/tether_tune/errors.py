"""The one error type for what a user can fix.

Every problem a user can act on — a bad flag value, a missing or malformed file, a bad line in a data file, an
unknown model path, a bad tools file, an example that does not fit the length limit, a CodeTether server that is
down or refuses a call — is a :class:`TetherTuneError`. The CLI prints it as ``tether-tune COMMAND: error:
MESSAGE`` and exits with status 2, without a traceback. Any other exception is a bug in tether-tune and keeps its
traceback.

The subclasses say which kind of input is at fault; a message always says what is wrong, where (flag, file,
line, field) and, where it is not obvious, what to do.

``TetherTuneError`` derives from ``ValueError`` so that code written against the earlier ``ValueError``-based
errors keeps working.
"""

from __future__ import annotations


class TetherTuneError(ValueError):
    """A problem the user can fix (input, flags, files, models); the message says what, where and what to do."""


class ConfigError(TetherTuneError):
    """A flag has a value the command cannot use. The message names the flag."""


class DataError(TetherTuneError):
    """A problem in a data file, located by ``file:line`` and field."""

    def __init__(self, source: str, field_name: str | None, message: str):
        self.source, self.field, self.message = source, field_name, message
        where = f"{source}: field {field_name!r}: " if field_name else f"{source}: "
        super().__init__(where + message)


class DataLengthError(TetherTuneError):
    """An example does not fit the length limit; we refuse rather than cut it."""


class ToolsError(TetherTuneError):
    """A tools file that cannot be used; the message names the file, the tool and the field."""


class ModelNotFoundError(TetherTuneError):
    """A model argument that names nothing loadable: no such directory or file, or a hub id out of reach."""


class ServerError(TetherTuneError):
    """The CodeTether server answered outside JSON-RPC (an HTTP error, a JSON-RPC error, a body that is not JSON);
    the message names the URL, what came back and what to check."""


class ServerUnreachableError(ServerError):
    """No CodeTether server answered: nothing listening at the URL, or no answer within the timeout."""


class ToolCallError(ServerError):
    """One call could not be carried out: it is invalid against our tools, or the server's tool answered with an
    error (``result.error``). The message names the call and what to do."""


class ToolDriftError(ServerError):
    """The server's tools (``tools/list``) no longer match what a call needs: a tool is missing or an argument
    changed. The message names the tool and the argument."""
