"""`python -m simulator`: run the loopback AT in the foreground.

Defaults for the key, username and webhook token come from Reach's settings (environment, then
`.env`), so a Reach pointed at the simulator with `AT_SMS_URL`/`AT_VOICE_URL` is accepted as is.
"""

from __future__ import annotations

import argparse
import logging
import sys

from shared.settings import SettingsError, load_settings
from simulator.app import serve
from simulator.dispatch import DEFAULT_MAX_PENDING, DEFAULT_SENDERS
from simulator.scenario import Scenario

#: The key accepted when neither --api-key nor AT_API_KEY gives one.
DEFAULT_API_KEY = "sim-key"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="A loopback Africa's Talking.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--scenario", metavar="FILE", help="scenario JSON (see simulator/scenario.py)")
    parser.add_argument("--callback-url", metavar="URL", help="base URL; callbacks go to URL/dlr and URL/voice")
    # Both secrets are better left to the environment (WEBHOOK_TOKEN, AT_API_KEY): a command line shows in ps.
    parser.add_argument(
        "--webhook-token", metavar="T", help="appended to callbacks as ?token=T (default: WEBHOOK_TOKEN)"
    )
    parser.add_argument("--api-key", help=f"key clients must send (default: AT_API_KEY, else {DEFAULT_API_KEY})")
    parser.add_argument("--username", help="AT username clients must send (default: AT_USERNAME, else sandbox)")
    parser.add_argument(
        "--senders", type=int, default=DEFAULT_SENDERS, help=f"threads posting callbacks (default {DEFAULT_SENDERS})"
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=DEFAULT_MAX_PENDING,
        help=f"callbacks queued before a send waits for its answer (default {DEFAULT_MAX_PENDING:,})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, fill the gaps from settings, and serve until interrupted."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scenario = Scenario.from_file(args.scenario) if args.scenario else Scenario()
    serve(
        host=args.host,
        port=args.port,
        scenario=scenario,
        api_key=args.api_key or settings.at_api_key.get_secret_value() or DEFAULT_API_KEY,
        username=args.username or settings.at_username or "sandbox",
        callback_base_url=args.callback_url,
        webhook_token=args.webhook_token or next(iter(settings.webhook_tokens), None),
        senders=args.senders,
        max_pending=args.max_pending,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
