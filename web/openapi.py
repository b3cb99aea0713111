"""The HTTP contract as an OpenAPI 3 document: web/openapi.yaml, served at `GET /api/openapi.json`.

The document itself needs no credentials (it is in the repository anyway); the operations it describes do.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint
from flask.typing import ResponseReturnValue

bp = Blueprint("openapi", __name__)


@functools.cache
def document() -> dict[str, Any]:
    """The parsed web/openapi.yaml (read once per process)."""
    return yaml.safe_load(resources.files("web").joinpath("openapi.yaml").read_text(encoding="utf-8"))


@bp.get("/api/openapi.json")
def openapi() -> ResponseReturnValue:
    return document()
