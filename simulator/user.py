"""AT's application data: `GET /version1/user?username=...` answers the account's balance (at-api.md §1.3,
the SDK's `Application.fetch_application_data`); a bad `apiKey` gets AT's 401 text, as everywhere."""

from __future__ import annotations

from flask import Blueprint, Response, request

from simulator.at_http import check, json_answer

#: What the simulated account holds; `reach doctor` prints it.
BALANCE = "KES 1234.50"

user_bp = Blueprint("at_user", __name__)


@user_bp.get("/version1/user")
def user() -> Response:
    problem = check(request.args.to_dict(), ("username",))
    if problem is not None:
        return problem
    return json_answer(200, {"UserData": {"balance": BALANCE}})
