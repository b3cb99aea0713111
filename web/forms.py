"""Reading a request body as AT's form fields or the seed's JSON, whichever it is."""

from __future__ import annotations

from typing import Any

from flask import Request

from web.bodies import read_json_object
from web.errors import ApiError


def read_fields(request: Request) -> dict[str, Any]:
    """The body's fields as a flat dict; a 400 `ApiError` says what is wrong with it."""
    mimetype = request.mimetype or ""
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return read_json_object(request)
    if mimetype in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        return request.form.to_dict()
    if not mimetype and request.get_data(cache=True).lstrip()[:1] == b"{":
        return read_json_object(request)
    if not mimetype and not request.get_data(cache=True):
        return {}
    raise ApiError(400, f"unsupported content type {mimetype or '(none)'}: send form fields or JSON")
