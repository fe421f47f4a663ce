"""Errors the service raises; ``main.py`` maps each to its HTTP status with a JSON ``detail``."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``status_code`` and a message safe to show to the client."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """Unknown slide id, or a resource the slide lacks (e.g. no image)."""

    status_code = 404


class BadInput(ServiceError):
    """A request or file that cannot be processed: bad feature file, wrong dim, bad parameter."""

    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


class Unavailable(ServiceError):
    """The server cannot answer now (busy, or its features folder is gone); the client may retry."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
