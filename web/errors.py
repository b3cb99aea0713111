"""Every error leaves as JSON `{"error": "..."}` with the right status; never an HTML page."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, InternalServerError

from shared.callbacks import BadCallback

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status for the client, raised anywhere inside a view."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BadBody(BadRequest):
    """A body the server could not read to its end (web/bodies.py): a malformed chunked framing, or a client
    that stopped sending."""


def error_response(status: int, message: str) -> ResponseReturnValue:
    return jsonify(error=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> ResponseReturnValue:
        return error_response(exc.status, exc.message)

    @app.errorhandler(BadCallback)
    def _bad_callback(exc: BadCallback) -> ResponseReturnValue:
        return error_response(400, str(exc))

    @app.errorhandler(BadBody)
    def _bad_body(exc: BadBody) -> ResponseReturnValue:
        # What follows on the connection cannot be parsed: the server must not read another request from it.
        return jsonify(error=exc.description), 400, {"Connection": "close"}

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        if isinstance(exc, ClientDisconnected):  # Werkzeug's text speaks of browsers and proxies
            return error_response(400, "request body ended before its declared length")
        message = {
            413: "request body too large",
            404: "not found",
            405: "method not allowed",
        }.get(exc.code or 500, exc.description or exc.name)
        return error_response(exc.code or 500, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        log.exception("unhandled error")
        return error_response(InternalServerError.code, "internal error")
