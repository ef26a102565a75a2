"""Quiet hours: the operator's sending window per category (marketing only 09:00-20:00 by default) and the
user's own do-not-disturb period, both in the user's time zone (the operator's default zone when the user
has none).

Outside a window a message is deferred to the moment both windows are open again, or dropped where the
template or category says ``drop``. Verification, transactional and urgent messages are never held by the
operator's window; the user's own do-not-disturb period holds everything but verification codes and urgent
messages (the user asked for quiet, but an order update can wait until morning). ``ignore`` on a template
turns the operator's window off for it; the user's period still applies.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from clarion.domain import model, timewindows
from clarion.domain.policy import config
from clarion.domain.policy.decision import ALLOW, Candidate, Decision, Defer, Drop

POLICY = "quiet_hours"
_MAX_STEPS = 16  # alternating between two daily windows converges in a couple of steps; this only bounds bad data


def decide(candidate: Candidate, settings: config.PolicySettings, zone: ZoneInfo) -> Decision:
    overrides = candidate.overrides
    category = candidate.category
    behaviour = overrides.quiet_hours or settings.quiet_hours.get(category, "defer")
    protected = candidate.protected
    windows: list[tuple[str, timewindows.DailyWindow]] = []
    if not protected and behaviour != "ignore":
        window = overrides.send_window or settings.send_windows.get(category)
        if window is not None and not window.always_open:
            windows.append(("send_window", window))
    user_exempt = category is model.Category.VERIFICATION or candidate.template.priority is model.Priority.URGENT
    own = candidate.preferences.allowed_window
    if own is not None and not user_exempt:
        windows.append(("do_not_disturb", own))
    if not windows:
        return ALLOW
    found = _next_open(candidate.now, windows, zone)
    if found is None:
        return Drop(
            POLICY,
            "quiet_hours: the sending window and the user's do-not-disturb period never overlap",
            {"windows": [str(w) for _, w in windows], "timezone": zone.key},
        )
    opens, closed_by = found
    if opens == candidate.now:
        return ALLOW
    name, window = closed_by
    local = candidate.now.astimezone(zone)
    detail = {
        "window": str(window) if name == "send_window" else candidate.preferences.do_not_disturb,
        "kind": name,
        "timezone": zone.key,
        "local_time": local.isoformat(),
        "next_open": opens.isoformat(),
        "behaviour": behaviour,
    }
    what = (
        f"outside the sending window {window}"
        if name == "send_window"
        else f"inside the user's do-not-disturb period {candidate.preferences.do_not_disturb}"
    )
    at = f"{local:%H:%M} {zone.key}"
    if behaviour == "drop" and not protected:
        return Drop(POLICY, f"quiet_hours: {what} ({at})", detail)
    return Defer(
        opens, POLICY, f"quiet_hours: {what} ({at}); deferred until {opens.astimezone(zone):%Y-%m-%d %H:%M}", detail
    )


def _next_open(
    at: datetime, windows: list[tuple[str, timewindows.DailyWindow]], zone: ZoneInfo
) -> tuple[datetime, tuple[str, timewindows.DailyWindow]] | None:
    """The first instant from ``at`` at which every window is open, and the window that held it back first;
    None when they never are (a sending window lying wholly inside the user's quiet period)."""
    first_closed: tuple[str, timewindows.DailyWindow] | None = None
    t = at
    for _ in range(_MAX_STEPS):
        moved = False
        for entry in windows:
            if not entry[1].is_open(t, zone):
                first_closed = first_closed or entry
                t = entry[1].next_open(t, zone)
                moved = True
        if not moved:
            return t, first_closed or windows[0]
    return None
