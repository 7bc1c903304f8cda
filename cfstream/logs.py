"""Loggers: every cfstream logger redacts the secrets registered in this process.

:func:`get_logger` is how a module gets its logger; it attaches
:class:`~cfstream.secrets.SecretRedactingFilter` (filters do not inherit down the logger tree, so
each logger gets its own).
"""

from __future__ import annotations

import logging

from cfstream.secrets import SecretRedactingFilter

__all__ = ("get_logger",)

_FILTER = SecretRedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name`` with secret redaction attached (filters do not inherit)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
