"""Send-time optimisation: the hour of the week at which each user responds, and when to send them a message.

Pure (standard library and NumPy). A user's responses (opens, clicks, tracked activity) are counted per hour of
the week in the user's own time zone (``weekday * 24 + hour``, Monday 00:00 is 0). A user with few responses says
little, so their counts are smoothed toward the population's pattern (a Dirichlet posterior with ``strength``
pseudo-events) and lightly across neighbouring hours: each response also counts ``NEIGHBOUR`` (0.2) for the hour
before and the hour after, keeping 0.6 for its own hour, wrapping from Sunday 23:00 to Monday 00:00; then half
of each hour's mass (``DAILY``) is shared evenly over the same hour of all seven days, because a user who clicks
at 20:00 on Tuesdays likely responds at 20:00 on Wednesdays too, and four weeks give only four Tuesdays.

Profiles for many users are kept sparse (``Profiles``, CSR-like): 8 bytes per user plus 3 bytes (a ``uint8`` hour
and a ``uint16`` count, saturating at 65,535) per hour in which the user responded at all, so 10^6 users with
about 15 active hours each take about 53 MB, against 336 MB for dense 168-hour rows.

A send is placed at the start of a local hour within the next ``within`` (24 h by default): the candidate hours
are the user's coming local hour starts, the one with the highest posterior wins, ties go to the earliest, and an
``allowed`` mask or predicate removes hours the caller may not use (quiet hours). With no data at all the
posterior is the population's pattern, so the choice is the population's best hour. ``allowed_hours`` turns a
predicate (the quiet-hours policy, asked by the campaign runner) into that mask; ``local_profiles`` builds
``Profiles`` from responses as instants, each read in its user's zone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

import numpy as np
import numpy.typing as npt

HOURS = 168
NEIGHBOUR = 0.2
DAILY = 0.5
STRENGTH = 8.0
MAX_COUNT = np.iinfo(np.uint16).max
#: users whose posteriors are computed together in the batch form (168 float64 each: about 11 MB per chunk)
CHUNK = 8192

Allowed = Callable[[datetime], bool] | Sequence[bool] | npt.NDArray[np.bool_]


def hour_of_week(at: datetime, zone: tzinfo) -> int:
    """The hour of the week of instant ``at`` on the wall clock of ``zone`` (Monday 00:00–00:59 is 0)."""
    if at.tzinfo is None:
        raise ValueError("hour_of_week needs an aware datetime")
    local = at.astimezone(zone)
    return local.weekday() * 24 + local.hour


def _offset(epoch: int, zone: tzinfo) -> int:
    offset = datetime.fromtimestamp(epoch, UTC).astimezone(zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _offsets(epochs: npt.NDArray[np.int64], zone: tzinfo) -> npt.NDArray[np.int64]:
    """UTC offsets (seconds) of ``zone`` at each instant: sampled hourly over the range, each change located to
    the second by bisection, then looked up with ``searchsorted``."""
    low, high = int(epochs.min()), int(epochs.max())
    samples = list(range(low - low % 3600, high + 3600, 3600))
    starts = [low]
    values = [_offset(low, zone)]
    for before, after in itertools.pairwise(samples):
        if _offset(after, zone) == _offset(before, zone):
            continue
        lo, hi = before, after  # offset(lo) differs from offset(hi): find the first second of the new offset
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(mid, zone) == _offset(before, zone):
                lo = mid
            else:
                hi = mid
        starts.append(hi)
        values.append(_offset(hi, zone))
    index = np.searchsorted(np.asarray(starts, dtype=np.int64), epochs, side="right") - 1
    return np.asarray(values, dtype=np.int64)[np.maximum(index, 0)]


def hours_of_week(epochs: npt.ArrayLike, zone: tzinfo) -> npt.NDArray[np.uint8]:
    """``hour_of_week`` for many instants given as Unix seconds, all in one zone (DST handled)."""
    at = np.asarray(epochs, dtype=np.int64)
    if at.size == 0:
        return np.zeros(0, dtype=np.uint8)
    local = at + _offsets(at, zone)
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    return (weekday * 24 + (local % 86400) // 3600).astype(np.uint8)


def profile(responses: Iterable[datetime], zone: tzinfo) -> npt.NDArray[np.uint16]:
    """One user's counts per hour of the week (dense, 168 ``uint16``)."""
    counts = np.zeros(HOURS, dtype=np.int64)
    for at in responses:
        counts[hour_of_week(at, zone)] += 1
    return np.minimum(counts, MAX_COUNT).astype(np.uint16)


@dataclass(frozen=True)
class Profiles:
    """Counts per hour of the week for many users, CSR-like: user ``u``'s active hours are
    ``hours[indptr[u]:indptr[u + 1]]`` (ascending) with their ``counts``."""

    indptr: npt.NDArray[np.int64]
    hours: npt.NDArray[np.uint8]
    counts: npt.NDArray[np.uint16]

    @property
    def users(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_responses(cls, user: npt.ArrayLike, hour: npt.ArrayLike, users: int) -> Profiles:
        """From one row per response: the user's index (0 … ``users`` - 1) and the response's hour of the week."""
        u = np.asarray(user, dtype=np.int64)
        h = np.asarray(hour, dtype=np.int64)
        if u.size and (u.min() < 0 or u.max() >= users or h.min() < 0 or h.max() >= HOURS):
            raise ValueError("user index or hour of week out of range")
        keys, counts = np.unique(u * HOURS + h, return_counts=True)
        indptr = np.zeros(users + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys // HOURS, minlength=users), out=indptr[1:])
        return cls(indptr, (keys % HOURS).astype(np.uint8), np.minimum(counts, MAX_COUNT).astype(np.uint16))

    @classmethod
    def from_dense(cls, counts: npt.ArrayLike) -> Profiles:
        dense = np.asarray(counts)
        user, hour = np.nonzero(dense)
        indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(user, minlength=dense.shape[0]), out=indptr[1:])
        values = np.minimum(dense[user, hour], MAX_COUNT).astype(np.uint16)
        return cls(indptr, hour.astype(np.uint8), values)

    def dense(self, rows: npt.ArrayLike | None = None) -> npt.NDArray[np.float64]:
        """The counts of ``rows`` (default: every user) as a dense ``(len(rows), 168)`` float array."""
        r = np.arange(self.users) if rows is None else np.asarray(rows, dtype=np.int64)
        starts = self.indptr[r]
        lengths = self.indptr[r + 1] - starts
        out = np.zeros((len(r), HOURS), dtype=np.float64)
        owner = np.repeat(np.arange(len(r)), lengths)
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        source = np.repeat(starts, lengths) + within
        out[owner, self.hours[source]] = self.counts[source]
        return out


def population(profiles: Profiles | npt.NDArray[np.generic] | Iterable[npt.ArrayLike]) -> npt.NDArray[np.float64]:
    """The population's distribution over the hours of the week (uniform when nobody has responded)."""
    if isinstance(profiles, Profiles):
        total = np.bincount(profiles.hours, weights=profiles.counts, minlength=HOURS).astype(np.float64)
    elif isinstance(profiles, np.ndarray):
        total = profiles.reshape(-1, HOURS).sum(axis=0, dtype=np.float64)
    else:
        total = np.zeros(HOURS, dtype=np.float64)
        for counts in profiles:
            total += np.asarray(counts, dtype=np.float64)
    mass = total.sum()
    return total / mass if mass > 0 else np.full(HOURS, 1.0 / HOURS)


def posterior(
    user_counts: npt.ArrayLike, population: npt.ArrayLike, strength: float = STRENGTH
) -> npt.NDArray[np.float64]:
    """The Dirichlet-smoothed distribution ``(smoothed counts + strength × population) / (n + strength)``;
    the counts are smoothed over neighbouring hours and across days first (both keep their total, see above).

    Works on one user's 168 counts or on rows of many users' counts (the last axis is the hour)."""
    counts = np.asarray(user_counts, dtype=np.float64)
    smoothed = (1 - 2 * NEIGHBOUR) * counts + NEIGHBOUR * np.roll(counts, 1, axis=-1)
    smoothed += NEIGHBOUR * np.roll(counts, -1, axis=-1)
    days = smoothed.reshape((*smoothed.shape[:-1], 7, 24))
    pooled = (1 - DAILY) * days + DAILY * days.mean(axis=-2, keepdims=True)
    smoothed = pooled.reshape(smoothed.shape)
    prior = strength * np.asarray(population, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True) + strength
    return np.asarray((smoothed + prior) / total, dtype=np.float64)


def _candidates(zone: tzinfo, now: datetime, within: timedelta) -> tuple[list[datetime], npt.NDArray[np.int64]]:
    """The starts of the user's local hours in ``[now, now + within)`` (UTC) and their hours of the week."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    start = now.astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    if start < now:
        start += timedelta(hours=1)
    end = now + within
    times: list[datetime] = []
    while start < end:
        times.append(start)
        start += timedelta(hours=1)
    return times, np.asarray([hour_of_week(t, zone) for t in times], dtype=np.int64)


def best_send_at(
    posterior: npt.ArrayLike,
    zone: tzinfo,
    now: datetime,
    within: timedelta = timedelta(hours=24),
    allowed: Allowed | None = None,
) -> datetime | None:
    """The start (UTC) of the coming local hour, within ``within`` of ``now``, whose posterior is highest.

    ``allowed`` is a 168-entry mask over hours of the week or a predicate on the candidate (an aware datetime in
    ``zone``); ``None`` when no candidate is allowed. Ties go to the earliest hour."""
    times, hours = _candidates(zone, now, within)
    scores = np.asarray(posterior, dtype=np.float64)[hours]
    if callable(allowed):
        keep = np.asarray([bool(allowed(t.astimezone(zone))) for t in times], dtype=bool)
    elif allowed is not None:
        keep = np.asarray(allowed, dtype=bool)[hours]
    else:
        keep = np.ones(len(times), dtype=bool)
    if not keep.any():
        return None
    return times[int(np.argmax(np.where(keep, scores, -np.inf)))]


def best_send_times(
    profiles: Profiles | npt.ArrayLike,
    population: npt.ArrayLike,
    zones: Sequence[tzinfo],
    zone_of_user: npt.ArrayLike,
    now: datetime,
    within: timedelta = timedelta(hours=24),
    allowed: npt.ArrayLike | None = None,
    strength: float = STRENGTH,
) -> npt.NDArray[np.int64]:
    """``best_send_at`` for every user of a campaign at once, as Unix seconds (``-1`` where no hour is allowed).

    ``profiles`` holds the users' counts (``Profiles`` or a dense ``(users, 168)`` array); user ``u`` lives in
    ``zones[zone_of_user[u]]``. ``allowed`` is a 168 mask for everyone or a ``(users, 168)`` mask. Users are
    grouped by zone: each zone's candidate hours are worked out once, then its users are decided in chunks."""
    table = profiles if isinstance(profiles, Profiles) else Profiles.from_dense(profiles)
    zone_index = np.asarray(zone_of_user, dtype=np.int64)
    if len(zone_index) != table.users:
        raise ValueError("zone_of_user needs one zone per user")
    mask = None if allowed is None else np.asarray(allowed, dtype=bool)
    result = np.full(table.users, -1, dtype=np.int64)
    order = np.argsort(zone_index, kind="stable")
    bounds = np.searchsorted(zone_index[order], np.arange(len(zones) + 1))
    for z, zone in enumerate(zones):
        members = order[bounds[z] : bounds[z + 1]]
        if members.size == 0:
            continue
        times, hours = _candidates(zone, now, within)
        if not times:
            continue
        epochs = np.asarray([int(t.timestamp()) for t in times], dtype=np.int64)
        for first in range(0, members.size, CHUNK):
            rows = members[first : first + CHUNK]
            scores = posterior(table.dense(rows), population, strength)[:, hours]
            if mask is not None:
                keep = mask[hours][None, :] if mask.ndim == 1 else mask[rows][:, hours]
                keep = np.broadcast_to(keep, scores.shape)
                scores = np.where(keep, scores, -np.inf)
                chosen = epochs[np.argmax(scores, axis=1)]
                result[rows] = np.where(keep.any(axis=1), chosen, -1)
            else:
                result[rows] = epochs[np.argmax(scores, axis=1)]
    return result


def allowed_hours(
    zone: tzinfo, now: datetime, allowed: Callable[[datetime], bool], within: timedelta = timedelta(hours=24)
) -> npt.NDArray[np.bool_]:
    """A 168 mask for ``best_send_times`` from a predicate on the coming local hour starts (aware datetimes in
    ``zone``): only the hours within ``within`` of ``now`` are asked, the others are left out."""
    times, hours = _candidates(zone, now, within)
    mask = np.zeros(HOURS, dtype=bool)
    for at, hour in zip(times, hours, strict=True):
        mask[hour] = bool(allowed(at.astimezone(zone)))
    return mask


def local_profiles(
    user: npt.ArrayLike, epochs: npt.ArrayLike, zones: Sequence[tzinfo], zone_of_user: npt.ArrayLike
) -> Profiles:
    """``Profiles`` from one row per response (the user's index and the instant, Unix seconds), each response
    counted in its user's own zone ``zones[zone_of_user[user]]``."""
    u = np.asarray(user, dtype=np.int64)
    at = np.asarray(epochs, dtype=np.int64)
    zone_index = np.asarray(zone_of_user, dtype=np.int64)
    hours = np.zeros(len(u), dtype=np.int64)
    zone_of_response = zone_index[u] if u.size else np.zeros(0, dtype=np.int64)
    for z, zone in enumerate(zones):
        rows = np.flatnonzero(zone_of_response == z)
        if rows.size:
            hours[rows] = hours_of_week(at[rows], zone)
    return Profiles.from_responses(u, hours, len(zone_index))
