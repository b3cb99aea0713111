"""Who may use the dashboard: sign-in and sign-out, server-side sessions, cross-site posts, sign-in attempts.

Browsers cannot send a bearer header, so the operator signs in once with an API_TOKEN through a form. The
answer is a signed, HttpOnly, SameSite=Strict cookie scoped to /dashboard that carries only a random session
id. The session itself is a key in the store (Redis, or the database's kv_entries in the embedded mode) that
lapses with the session, so signing out ends it on every receiver at once and a copied cookie is worth
nothing afterwards. The cookie is signed with a key derived from the token used, so removing that token from
API_TOKEN ends its sessions too. The token is never in a URL, a cookie, the store or a log line.

The cookie is `Secure` when the browser came over HTTPS (DASHBOARD_COOKIE_SECURE unset: auto), or always or
never as that setting says. A browser drops a Secure cookie set over plain HTTP (http://192.168.x.y), so a
sign-in there would fail without a word: the sign-in's redirect carries a one-time marker, and a browser that
comes back with the marker but without the cookie is told why on the sign-in page (`sign_in_gate`).

Cross-site requests: a POST (or any unsafe method) under /dashboard, the cookie's whole scope and so any form
the dashboard grows, must come from the dashboard's own origin as the browser reports it (`sent_here`);
otherwise 403. There is no CSRF token in the forms: see `sent_here` for why none is needed.

Sign-in attempts are limited per client address (RATE_LIMIT_DASHBOARD_LOGIN), counted where the other rate
limits are (Redis, so every receiver process shares the count): 429 with Retry-After and a page saying why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, redirect, render_template, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from itsdangerous import BadSignature, URLSafeTimedSerializer

from shared.store import STORE_ERRORS
from web.auth import is_operator_token
from web.limits import retry_after
from web.services import services

log = logging.getLogger(__name__)

bp = Blueprint("dashboard_auth", __name__, url_prefix="/dashboard", template_folder="templates")
#: The sign-in form's body: it carries the credential, so it is read before anything can be checked; the
#: form needs well under this (its time to arrive is bounded too: BODY_TIMEOUT_SECONDS).
LOGIN_MAX_BYTES = 4 * 1024

COOKIE = "reach_dashboard"
#: Store keys of live sessions; `reach:` like every key of ours.
SESSION_KEY_PREFIX = "reach:dashboard:session:"
#: Store keys of sign-ins whose redirect has not come back yet; the marker is in /dashboard's query string.
SIGN_IN_KEY_PREFIX = "reach:dashboard:signin:"
SIGN_IN_MARKER = "signed_in"
#: How long a browser has to follow the sign-in's redirect (it does so at once).
SIGN_IN_MARKER_SECONDS = 60
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask, limiter: Limiter) -> None:
    settings = app.extensions["reach.settings"]
    # Every attempt counts, before the form is read: counting only failures once answered would let a burst of
    # parallel guesses all pass the check before the first is counted. A cross-site post is not counted (it is
    # refused before its token is looked at), so another site cannot use a visitor's browser to lock them out.
    limiter.limit(
        settings.rate_limit_dashboard_login,
        methods=["POST"],
        exempt_when=lambda: request.endpoint != "dashboard_auth.login" or not sent_here(),
        on_breach=_too_many_attempts,
    )(bp)
    app.register_blueprint(bp)
    app.before_request(refuse_cross_site)


# -- sessions -------------------------------------------------------------------------------------------------


def _serializer(token: str) -> URLSafeTimedSerializer:
    key = hmac.new(token.encode(), b"reach dashboard session", hashlib.sha256).digest()
    return URLSafeTimedSerializer(key, salt="reach.dashboard")


def _store_key(secret: str, prefix: str = SESSION_KEY_PREFIX) -> str:
    # A digest: what the store holds is not itself a session id (or sign-in marker).
    return prefix + hashlib.sha256(secret.encode()).hexdigest()


def _cookie_session_id() -> str | None:
    """The session id in the request's cookie, when it is signed for a token still in API_TOKEN and not older
    than DASHBOARD_SESSION_HOURS."""
    cookie = request.cookies.get(COOKIE, "")
    if not cookie:
        return None
    settings = services().settings
    max_age = int(settings.dashboard_session_hours * 3600)
    for token in settings.api_tokens:
        try:
            data = _serializer(token).loads(cookie, max_age=max_age)
        except BadSignature:
            continue
        session_id = data.get("sid") if isinstance(data, dict) else None
        return session_id if isinstance(session_id, str) else None
    return None


def signed_in() -> bool:
    """True when the request carries a valid cookie for a session that has not ended."""
    session_id = _cookie_session_id()
    if session_id is None:
        return False
    try:
        return services().store.is_marked(_store_key(session_id))
    except STORE_ERRORS as exc:
        log.warning("dashboard session not checked, the store is unreachable (%s): sent to sign in", type(exc).__name__)
        return False


@bp.get("/login")
def login_form() -> ResponseReturnValue:
    return login_page(200)


@bp.post("/login")
def login() -> ResponseReturnValue:
    """Start a session for an operator token: a fresh id each time, kept in the store for the session's life."""
    request.max_content_length = LOGIN_MAX_BYTES  # before the form is read: larger is a 413
    settings = services().settings
    given = request.form.get("token", "").strip()
    if not settings.api_tokens:
        return login_page(401, "The dashboard is disabled: set API_TOKEN.")
    if not given or not is_operator_token(given):
        return login_page(401, "Wrong token.")
    session_id, marker = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    lifetime = int(settings.dashboard_session_hours * 3600)
    try:
        services().store.mark(_store_key(session_id), lifetime)
        services().store.mark(_store_key(marker, SIGN_IN_KEY_PREFIX), SIGN_IN_MARKER_SECONDS)
    except STORE_ERRORS as exc:
        log.warning("dashboard sign-in refused, the store is unreachable (%s)", type(exc).__name__)
        return notice_page(503, "Signing in is unavailable right now (the session store is unreachable).")
    response = redirect(f"/dashboard?{SIGN_IN_MARKER}={marker}", code=303)
    response.set_cookie(
        COOKIE,
        _serializer(given).dumps({"sid": session_id}),
        max_age=lifetime,
        path="/dashboard",
        secure=cookie_secure(),
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session in the store, so its cookie no longer works anywhere, then forget the cookie."""
    session_id = _cookie_session_id()
    if session_id is not None:
        try:
            services().store.unmark(_store_key(session_id))
        except STORE_ERRORS as exc:
            # Say so rather than pretend: the cookie would still work on another browser.
            log.warning("dashboard sign-out failed, the store is unreachable (%s)", type(exc).__name__)
            return notice_page(503, "Signing out failed (the session store is unreachable); try again.")
    response = redirect("/dashboard/login", code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


# -- HTTPS or plain HTTP ---------------------------------------------------------------------------------------


def reached_over_https() -> bool:
    """True when the browser reached us over HTTPS: the connection's scheme (X-Forwarded-Proto counts only from
    TRUSTED_PROXIES: ProxyFix, web/__init__.py), or the browser's own Origin (else Referer) says https, as it
    does behind a TLS-terminating proxy TRUSTED_PROXIES does not declare. A client that lies about its Origin
    only changes its own cookie."""
    if request.is_secure:
        return True
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return urlsplit(source).scheme == "https"


def cookie_secure() -> bool:
    """Whether the session cookie is `Secure`: as DASHBOARD_COOKIE_SECURE says; unset (auto), over HTTPS."""
    forced = services().settings.dashboard_cookie_secure
    return reached_over_https() if forced is None else forced


def sign_in_gate() -> ResponseReturnValue | None:
    """None when the request may see the dashboard; otherwise where it goes instead.

    Right after a sign-in, /dashboard's address carries its one-time marker. Signed in: the marker is dropped
    from the address (a reload or a bookmark is plain /dashboard). Not signed in, with a marker a sign-in made
    moments ago: the browser refused the cookie it was just given, and the sign-in page says why."""
    marker = request.args.get(SIGN_IN_MARKER)
    taken = marker is not None and _take_marker(marker)
    if signed_in():
        return None if marker is None else redirect("/dashboard", code=303)
    if taken:
        log.warning("dashboard sign-in did not stick: the browser came back without the cookie")
        return login_page(200, _why_the_cookie_was_not_kept())
    return redirect("/dashboard/login", code=303)


def _take_marker(marker: str) -> bool:
    """True once for a marker a sign-in made in the last SIGN_IN_MARKER_SECONDS."""
    if not marker or len(marker) > 64:
        return False
    key = _store_key(marker, SIGN_IN_KEY_PREFIX)
    try:
        if not services().store.is_marked(key):
            return False
        services().store.unmark(key)
    except STORE_ERRORS as exc:
        log.warning("dashboard sign-in marker not checked, the store is unreachable (%s)", type(exc).__name__)
        return False
    return True


def _why_the_cookie_was_not_kept() -> str:
    if services().settings.dashboard_cookie_secure and not reached_over_https():
        return (
            "Your browser did not keep the sign-in cookie: this address is plain HTTP and "
            "DASHBOARD_COOKIE_SECURE=true requires HTTPS. Open the dashboard over HTTPS, or unset "
            "DASHBOARD_COOKIE_SECURE (auto: Secure over HTTPS only) and restart Reach."
        )
    return (
        "Your browser did not keep the sign-in cookie, so you are not signed in. Allow cookies for this address "
        "(a private window or a privacy setting may block them) and sign in again."
    )


# -- cross-site posts -----------------------------------------------------------------------------------------


def sent_here() -> bool:
    """True when the browser says the request comes from a page of this same origin.

    `Sec-Fetch-Site` first: the browser's own verdict, which no page can set or forge, and right even behind a
    proxy that rewrites Host. Browsers without it send `Origin` on every POST; `Referer` covers the rest. A
    request with none of them is refused: every browser that honours SameSite sends at least one.

    Why no CSRF token as well: the session cookie is SameSite=Strict, so another site's form never carries it;
    a sibling subdomain (same site, so it would) has another origin and is refused here; and a page of this
    origin that could run script could read a token as easily. This is the scheme Go's
    `http.CrossOriginProtection` uses. Sign-in itself is checked the same way (login CSRF)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")  # none: the user's own navigation (address bar, bookmark)
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if source in ("", "null"):
        return False
    parsed = urlsplit(source)
    # Host and port only: a TLS-terminating proxy may hand us http while the browser saw https.
    return parsed.scheme in ("http", "https") and parsed.netloc.lower() == request.host.lower()


def refuse_cross_site() -> ResponseReturnValue | None:
    """Before any view: an unsafe request under /dashboard that was not sent from here gets a 403 page."""
    if request.method in SAFE_METHODS or not (request.path == "/dashboard" or request.path.startswith("/dashboard/")):
        return None
    if sent_here():
        return None
    log.warning("refused a cross-site %s %s", request.method, request.path)
    return notice_page(403, "Refused: this form was sent from another site. Open the dashboard and try again.")


# -- sign-in attempts -----------------------------------------------------------------------------------------


def _too_many_attempts(limit: RequestLimit) -> Response:
    wait = retry_after(limit)
    log.warning("dashboard sign-in attempts over the limit (%s) from one address", limit.limit)
    response = notice_page(429, f"Too many sign-in attempts from your address; try again in {wait} seconds.")
    response.headers["Retry-After"] = str(wait)
    return response


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(exc: RateLimitExceeded) -> ResponseReturnValue:
    """The page `_too_many_attempts` built, instead of the API's JSON 429."""
    return exc.get_response()


# -- pages ----------------------------------------------------------------------------------------------------


def login_page(status: int, error: str | None = None) -> Response:
    return no_store(Response(render_template("login.html", error=error), status=status))


def notice_page(status: int, message: str) -> Response:
    return no_store(Response(render_template("notice.html", message=message), status=status))


def no_store(response: Response) -> Response:
    """Headers every dashboard page carries: never cached, no script, never framed."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    response.headers["X-Frame-Options"] = "DENY"
    return response
