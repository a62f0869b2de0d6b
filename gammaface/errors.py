"""User-facing errors: one sentence, exit status 2, no traceback."""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user (config, files, data). The message is one complete sentence."""
