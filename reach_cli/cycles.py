"""What `reach cycle` and `reach schedule` need besides click: handing task nudges to the broker, and
turning previews and reports into lines an operator reads.

Tasks are sent by name (as the receiver does), so the CLI never imports `worker`. They are only nudges:
the worker's housekeeping re-plans cycles stuck in `planning` and restarts dispatchers of cycles with due
items, so a nudge lost to an unreachable broker delays a cycle; it never loses one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.settings import Settings


class BrokerUnreachable(RuntimeError):
    """The broker did not take the task messages; the message says why (never the URL's password)."""


def send_tasks(settings: Settings, names: Sequence[str], args: list[Any]) -> None:
    """Publish each task by name with `args`; raise `BrokerUnreachable` within a few seconds if it is down.

    Celery's own publish retries would block for a long time, so reachability is checked once on the
    producer's connection (one quick retry), and the sends themselves do not retry.
    """
    from kombu.exceptions import OperationalError

    from shared.broker import make_celery
    from shared.store import STORE_ERRORS

    app = make_celery("reach-cli", settings)
    try:
        with app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.3)
            for name in names:
                app.send_task(name, args=args, producer=producer, retry=False)
    except (OperationalError, OSError, *STORE_ERRORS) as exc:
        if settings.redis_url:
            raise BrokerUnreachable(f"the broker (REDIS_URL) is unreachable: {exc}") from None
        raise BrokerUnreachable(f"the embedded broker ({settings.effective_broker_url}) failed: {exc}") from None
    finally:
        app.close()


# -- rendering -----------------------------------------------------------------------------------------------


def counts(values: Mapping[str, int], empty: str = "none") -> str:
    """`{"a": 2, "b": 0, "c": 1}` as `a 2, c 1` (largest first); `empty` when all are zero."""
    shown = sorted(((k, v) for k, v in values.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in shown) or empty


def preview_lines(preview: Mapping[str, Any]) -> list[str]:
    cost = preview["estimated_cost"]
    lines = [
        "dry run: nothing was sent and no cycle was created",
        f"  SMS:            {preview['sms']}",
        f"  voice calls:    {preview['voice']}",
        f"  skipped:        {preview['skipped']} ({counts(preview['skipped_by_status'])})",
        f"  SMS parts:      {parts(preview['segments'])}",
        f"  estimated cost: {cost['currency']} {cost['amount']}",
        *call_lines(preview),
    ]
    if preview["skipped_by_status"].get("dlr_silence"):
        lines.append(
            "  dlr_silence: their last SMS never got a delivery report (see reach doctor); "
            "--ignore-dlr-silence calls them"
        )
    if preview["skipped_by_status"].get("network_incident"):
        lines.append("  network_incident: their network is failing (see reach incident list); held until it ends")
    return lines


def report_lines(report: Mapping[str, Any]) -> list[str]:
    sms, voice = report["sms_detail"], report["voice_detail"]
    sms_failed, not_answered = sum(sms["failed"].values()), sum(voice["not_answered"].values())
    lines = [f"cycle {report['id']}: {report['state']}"]
    if report["skip_reason"]:
        lines.append(f"  skipped:   {report['skip_reason']}")
    if report["paused_reason"]:
        hint = "let it go again with" if report.get("paused_by") == "operator" else "after fixing it"
        lines.append(f"  paused:    {report['paused_reason']} ({hint}: reach cycle resume {report['id']})")
    if report.get("dlr_silent_at"):
        lines.append("  no delivery report came for any of its SMS: check AT's delivery report URL (reach doctor)")
    by_schedule = f" (schedule {report['schedule_id']})" if report["schedule_id"] else ""
    lines += [
        f"  started:   {_when(report['created_at'])}{by_schedule}",
        f"  finished:  {_when(report['finished_at'])}",
        f"  message:   {short(report['message'])}",
    ]
    lines += [f"  {label:<10} {short(text)}" for label, text in voice_lines(report)]
    lines += [
        "",
        f"  planned    SMS {report['sms']}, voice {report['voice']}",
        f"  SMS        sent {sms['sent']}, delivered {sms['delivered']}, failed {sms_failed}"
        + (f", sent twice {sms['sent_twice']}" if sms.get("sent_twice") else ""),
        f"             failed by reason: {counts(sms['failed'])}",
        f"             items: {counts(sms['items'])}",
        f"  voice      called {voice['called']}, answered {voice['answered']}, acknowledged {voice['acknowledged']},"
        f" not answered {not_answered}",
        f"             not answered by cause: {counts(voice['not_answered'])}",
        *grade_lines(voice),
        f"             items: {counts(voice['items'])}",
        *reached_lines(report),
        f"  skipped    {report['skipped']} ({counts(report['skipped_by_status'])})",
        f"  cancelled  {report.get('cancelled', 0)} items not sent",
        f"  waiting    {report.get('waiting', 0)} items held for their send window"
        f" (SMS {report.get('sms_window', 'always')}, calls {report.get('call_window', 'always')}, local time"
        f"{promotional_note(report)})",
        *_fallback_lines(report.get("fallback")),
        f"  SMS parts  {parts(report['segments'])} per message",
        f"  estimated  {report['estimated_cost']['currency']} {report['estimated_cost']['amount']}",
        f"  cost       {counts_cost(report['cost_by_currency'])}",
        "",
        *funnel_lines(report["funnel"]),
        *network_lines(report["sms_by_network"]),
    ]
    return lines


def reached_lines(report: Mapping[str, Any]) -> list[str]:
    """Contacts the cycle reached (issue 14); absent from the answer of an older server."""
    reached = report.get("reached")
    if reached is None:
        return []
    return [f"  reached    {reached['contacts']} contacts ({reached['ussd_confirmed']} confirmed on USSD)"]


def call_lines(preview: Mapping[str, Any]) -> list[str]:
    """Who the dry run expects to call, why, and their share of the estimate; absent from an older server."""
    calls = preview.get("calls")
    if calls is None:
        return []
    cost = calls["estimated_cost"]
    why = counts({k.replace("_", " "): v for k, v in calls["by_reason"].items()})
    return [f"  calls needed:   {calls['contacts']} ({why}), {cost['currency']} {cost['amount']}"]


def grade_lines(voice: Mapping[str, Any]) -> list[str]:
    """Who answered (issue 14); absent from the answer of an older server."""
    grades = voice.get("grades")
    if grades is None:
        return []
    return [
        f"             graded: acknowledged {grades['acknowledged']}, answered {grades['answered']},"
        f" likely voicemail {grades['voicemail']}, not answered {grades['not_answered']}"
    ]


def promotional_note(report: Mapping[str, Any]) -> str:
    """`; promotional sender id: Kenya 08:00-18:00, ... too` when a promotional sender id holds SMS too."""
    windows = report.get("promotional_windows")
    return f"; promotional sender id: {windows} too" if windows else ""


def _fallback_lines(fallback: Mapping[str, Any] | None) -> list[str]:
    """A same-cycle fallback's line: SMS contacts still waiting for a report, and those called."""
    if not fallback or fallback["mode"] != "same_cycle":
        return []
    return [
        f"  fallback   same cycle: {fallback['calls']} called after their SMS, {fallback['waiting']} awaiting reports"
    ]


def funnel_lines(funnel: Mapping[str, Any]) -> list[str]:
    """`  funnel     delivered 3000 (75.0% of SMS sent)`: each step and what its percentage is of."""
    lines = []
    for i, step in enumerate(funnel["steps"]):
        share = f"{step['percent']}%" if step["percent"] is not None else "-"
        title = "funnel" if i == 0 else ""
        lines.append(f"  {title:<9}  {step['label']} {step['count']} ({share} of {step['of']})")
    return lines


def network_lines(networks: Sequence[Mapping[str, Any]]) -> list[str]:
    """`  networks   Safaricom: 2900 of 3400 delivered (85.3%)`, one network a line."""
    lines = []
    for i, row in enumerate(networks):
        rate = f"{row['delivery_rate']}%" if row["delivery_rate"] is not None else "-"
        title = "networks" if i == 0 else ""
        lines.append(f"  {title:<9}  {row['network']}: {row['delivered']} of {row['sent']} delivered ({rate})")
    return lines


def parts(segments: Mapping[str, Any]) -> str:
    """`2 (UCS-2)`: how many SMS parts AT bills for each message, and why."""
    return f"{segments['parts']} ({segments['encoding']})"


def counts_cost(cost: Mapping[str, str]) -> str:
    """What AT charged, in every currency it charged in (`cost_by_currency`)."""
    return ", ".join(f"{currency} {amount}" for currency, amount in cost.items()) or "none reported yet"


OPEN_ITEMS = ("pending", "claimed", "submitting")


def progress_line(report: Mapping[str, Any], now: datetime) -> str:
    """One line per `reach cycle watch` tick."""
    sms, voice = report["sms_detail"], report["voice_detail"]
    to_go = sum(detail["items"].get(state, 0) for detail in (sms, voice) for state in OPEN_ITEMS)
    to_go += report.get("fallback", {}).get("waiting", 0)  # same-cycle fallback calls that may still come
    state = report["state"]
    if report["skip_reason"]:
        state += f" ({report['skip_reason']})"
    if report["paused_reason"]:
        state += f" ({report['paused_reason']}; reach cycle resume {report['id']})"
    return (
        f"{now:%H:%M:%S} cycle {report['id']} {state}: "
        f"SMS {sms['sent']} sent, {sms['delivered']} delivered, {sum(sms['failed'].values())} failed; "
        f"voice {voice['called']} called, {voice['answered']} answered, "
        f"{sum(voice['not_answered'].values())} not answered; {to_go} to go"
        + (f" ({report['waiting']} waiting for their send window)" if report.get("waiting") else "")
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Left-aligned columns, as wide as their widest cell; `None` prints as `-`."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()


def voice_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The cycle's voice as (label, text): one line each for the text and the recording, or one per language."""
    lines = []
    for label, given in (("voice:", report["voice_message"]), ("audio:", report.get("voice_audio_url"))):
        if isinstance(given, dict):
            lines += [(f"{label[:-1]} {language}:", text) for language, text in given.items()]
        elif given:
            lines.append((label, given))
    return lines


def short(text: str, width: int = 70) -> str:
    """One line of at most `width` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
