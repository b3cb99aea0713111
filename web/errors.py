"""Every error leaves as JSON `{"error": "..."}` with the right status; never an HTML page."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, InternalServerError

from shared.callbacks import BadCallback

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status for the client, raised anywhere inside a view."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> ResponseReturnValue:
    return jsonify(error=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> ResponseReturnValue:
        return error_response(exc.status, exc.message)

    @app.errorhandler(BadCallback)
    def _bad_callback(exc: BadCallback) -> ResponseReturnValue:
        return error_response(400, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
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
