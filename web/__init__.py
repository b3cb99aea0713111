"""The receiver: the Flask app `web:create_app()`, served by granian behind the async front (`python -m
web.serve`: web/serve.py, web/front.py). Thin by design: validate, queue on Redis, answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from shared.settings import Settings


def create_app(settings: Settings | None = None, fast_path: bool = True) -> Flask:
    """Build the Flask app; every piece of wiring happens here, none at import time. `fast_path=False` leaves
    the WSGI fast path out: the async front (web/front.py) takes that path itself."""
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from shared.settings import get_settings

    settings = settings or get_settings()
    app = Flask(__name__, static_folder=None)  # an API: no static files
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["reach.settings"] = settings

    from web import (  # contacts_api, incidents_api add routes to operator_api.bp: imported first
        callbacks,
        callers,
        contacts_api,  # noqa: F401
        dashboard,
        dashboard_auth,
        errors,
        fastpath,
        health,
        incidents_api,  # noqa: F401
        limits,
        metrics,
        openapi,
        operator_api,
        services,
    )
    from web.bodies import GuardedBodies

    services.init_app(app, settings)
    metrics.init_app(app)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(callbacks.bp)
    app.register_blueprint(operator_api.bp)
    app.register_blueprint(openapi.bp)
    limiter = limits.init_app(app, settings, callbacks.bp, operator_api.bp)
    callers.init_app(app)
    dashboard_auth.init_app(app, limiter)
    dashboard.init_app(app)
    # Below the fast path, which reads only bodies of a declared length and answers its own errors.
    app.wsgi_app = GuardedBodies(app.wsgi_app)  # type: ignore[method-assign]
    if settings.uses_redis and fast_path:
        # DLRs and incoming SMS skip Flask on their happy path (web/fastpath.py); anything else reaches it.
        inbox = app.extensions["reach"].inbox
        app.wsgi_app = fastpath.CallbackFastPath(app.wsgi_app, settings, inbox)  # type: ignore[method-assign]
    if settings.trusted_proxies:
        # The client address (rate limits, logs) and scheme as the trusted proxies saw them; never more
        # hops than configured, so a client cannot choose its own address.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    return app
