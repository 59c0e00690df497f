"""The short exception tree. Messages say what went wrong and what to do about it.

`UserError` and its children are the user's mistakes (bad config, template, seed
file, input dataset): the CLI prints one line and exits with code 2, having sent
nothing. Everything else under `FactoryError` is a runtime failure: exit code 1.
"""


class FactoryError(Exception):
    """Base of every error factory raises on purpose."""

    exit_code = 1


class UserError(FactoryError):
    """Bad input from the user; nothing has been sent or written."""

    exit_code = 2


class ConfigError(UserError):
    """The pipeline file or a --set override is invalid."""


class TemplateError(UserError):
    """A Jinja template is missing, malformed or needs variables nobody provides."""


class SeedError(UserError):
    """A seed file or inline seed list is missing, unreadable, empty or malformed."""


class InputDataError(UserError):
    """An input dataset given to `factory filter` cannot be read."""


class TeacherError(FactoryError):
    """The teacher could not be reached or loaded (after the client's own retries)."""


class OutOfMemory(TeacherError):
    """An in-process batch did not fit in the device's memory (it is split and retried)."""


class RequestRefused(TeacherError):
    """The server refused this request itself (bad request, unknown model, bad key):
    sending it elsewhere or again would get the same answer."""

    # True when every request would be refused alike (a bad key, an unknown model):
    # the run stops at once instead of failing unit after unit.
    fatal = False


class TeacherMisconfigured(RequestRefused):
    """The teacher refuses every request (authentication, unknown model): fix the config."""

    fatal = True


class BadResponse(FactoryError):
    """A teacher answered, but the answer cannot be used (malformed body, empty choice).

    The engine treats it like unparseable content: retried a bounded number of times,
    then the sample is rejected with the message as its reason.
    """

    # The rejection reason a sample gets when its attempts end in this error.
    reason = "bad_response"


class OversizedAnswer(BadResponse):
    """The answer is far beyond max_tokens (a server that ignores it); reading stopped at a cap."""

    reason = "oversized"


class DocumentError(UserError):
    """A document given to grounded_qa cannot be found or read."""
