"""Send-time optimisation: hours of the week in the user's zone, the smoothed posterior and the chosen send hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from clarion.analytics import send_time as st

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
# Monday 2026-03-02 08:10 UTC (16:10 in Shanghai)
NOW = datetime(2026, 3, 2, 8, 10, tzinfo=UTC)


def peaked_population(hour_of_day: int) -> np.ndarray:
    counts = np.ones(st.HOURS)
    counts[[day * 24 + hour_of_day for day in range(7)]] = 50
    return counts / counts.sum()


def test_hour_of_week_follows_the_users_zone_across_dst() -> None:
    # Berlin moves from UTC+1 to UTC+2 at 01:00 UTC on Sunday 2026-03-29.
    assert st.hour_of_week(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), BERLIN) == 6 * 24 + 1
    assert st.hour_of_week(datetime(2026, 3, 29, 1, 30, tzinfo=UTC), BERLIN) == 6 * 24 + 3
    # Monday 00:00 in Berlin is still Sunday 23:00 UTC: the week starts on the user's Monday.
    assert st.hour_of_week(datetime(2026, 3, 29, 22, 0, tzinfo=UTC), BERLIN) == 0
    assert st.hour_of_week(datetime(2026, 3, 2, 0, 0, tzinfo=UTC), KOLKATA) == 5
    with pytest.raises(ValueError):
        st.hour_of_week(datetime(2026, 3, 2, 0, 0), BERLIN)


def test_vectorised_hours_of_week_equal_the_scalar_form_through_transitions() -> None:
    rng = np.random.default_rng(1)
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    epochs = start + rng.integers(0, 300 * 86400, size=3000)  # spans both DST changes
    for zone in (BERLIN, NEW_YORK, SHANGHAI, KOLKATA):
        expected = [st.hour_of_week(datetime.fromtimestamp(int(e), UTC), zone) for e in epochs]
        assert st.hours_of_week(epochs, zone).tolist() == expected


def test_a_user_with_strong_data_gets_their_own_hour() -> None:
    pop = peaked_population(10)
    responses = [datetime(2026, 2, day, 12, 30, tzinfo=UTC) for day in range(2, 28)]  # 20:30 in Shanghai, daily
    counts = st.profile(responses, SHANGHAI)
    assert counts.sum() == len(responses)
    at = st.best_send_at(st.posterior(counts, pop), SHANGHAI, NOW)
    assert at == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday 20:00 in Shanghai


def test_one_event_is_pulled_toward_the_population() -> None:
    pop = peaked_population(10)
    counts = st.profile([datetime(2026, 2, 10, 12, 5, tzinfo=UTC)], SHANGHAI)  # a Tuesday 20:05
    post = st.posterior(counts, pop)
    assert post.sum() == pytest.approx(1.0)
    own = 1 * 24 + 20
    assert post[own] > pop[own]  # the user's event counts …
    assert post[own] < 0.2  # … but one event does not make it their hour
    assert post[own - 1] > pop[own - 1] and post[own + 1] > pop[own + 1]  # neighbours share a little
    # Tuesday 10:00 in Shanghai (the population's hour) beats Tuesday 20:00 on the following day's window
    tuesday = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # Tuesday 07:00 in Shanghai
    assert st.best_send_at(post, SHANGHAI, tuesday) == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)


def test_no_data_gives_the_populations_best_hour() -> None:
    pop = peaked_population(10)
    post = st.posterior(np.zeros(st.HOURS), pop)
    np.testing.assert_allclose(post, pop)
    # 16:10 Monday in Shanghai: the next 10:00 is Tuesday's, 02:00 UTC
    assert st.best_send_at(post, SHANGHAI, NOW) == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    # nobody has any data either: a flat pattern, so the earliest coming hour
    flat = st.population(np.zeros((3, st.HOURS)))
    assert st.best_send_at(st.posterior(np.zeros(st.HOURS), flat), SHANGHAI, NOW) == datetime(
        2026, 3, 2, 9, 0, tzinfo=UTC
    )


def test_within_and_allowed_are_respected() -> None:
    pop = peaked_population(10)
    post = st.posterior(np.zeros(st.HOURS), pop)
    # within 6 hours the 10:00 peak is out of reach: every hour is equal, so the earliest
    assert st.best_send_at(post, SHANGHAI, NOW, within=timedelta(hours=6)) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    # a mask that forbids Tuesday 10:00 moves the choice to the second-best hour, Monday 20:00 in Shanghai
    second = peaked_population(10) + peaked_population(20) / 2
    mask = np.ones(st.HOURS, dtype=bool)
    assert st.best_send_at(second, SHANGHAI, NOW, allowed=mask) == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    mask[24 + 10] = False
    assert st.best_send_at(second, SHANGHAI, NOW, allowed=mask) == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    # a predicate on the local time: quiet hours 20:00–08:00, then also no sends at 10:00
    at = st.best_send_at(second, SHANGHAI, NOW, allowed=lambda t: 8 <= t.hour < 20)
    assert at == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    at = st.best_send_at(second, SHANGHAI, NOW, allowed=lambda t: t.hour >= 8 and t.hour != 10)
    assert at == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert st.best_send_at(post, SHANGHAI, NOW, allowed=lambda t: False) is None


def test_half_hour_zones_send_at_their_local_hour_start() -> None:
    post = st.posterior(np.zeros(st.HOURS), peaked_population(10))
    at = st.best_send_at(post, KOLKATA, NOW)
    assert at is not None
    local = at.astimezone(KOLKATA)
    assert (local.hour, local.minute) == (10, 0) and at > NOW


def test_profiles_round_trip_and_population() -> None:
    rng = np.random.default_rng(2)
    dense = rng.poisson(0.1, size=(50, st.HOURS))
    table = st.Profiles.from_dense(dense)
    np.testing.assert_array_equal(table.dense(), dense)
    np.testing.assert_array_equal(table.dense([7, 3]), dense[[7, 3]])
    users, hours = np.nonzero(dense)
    rebuilt = st.Profiles.from_responses(
        np.repeat(users, dense[users, hours]), np.repeat(hours, dense[users, hours]), 50
    )
    np.testing.assert_array_equal(rebuilt.dense(), dense)
    np.testing.assert_allclose(st.population(table), dense.sum(axis=0) / dense.sum())
    np.testing.assert_allclose(st.population(list(dense)), st.population(dense))


def test_batch_form_equals_the_per_user_form() -> None:
    rng = np.random.default_rng(3)
    users = 400
    dense = rng.poisson(rng.gamma(0.3, 0.2, size=(users, 1)), size=(users, st.HOURS))
    dense[:40] = 0  # some users without any data
    zones = [SHANGHAI, BERLIN, NEW_YORK, KOLKATA]
    zone_of_user = rng.integers(0, len(zones), size=users)
    pop = st.population(dense)
    mask = rng.random(st.HOURS) > 0.3
    per_user_mask = rng.random((users, st.HOURS)) > 0.5
    per_user_mask[0] = False
    now = datetime(2026, 3, 28, 18, 47, tzinfo=UTC)  # the window crosses Berlin's DST change
    for allowed in (None, mask, per_user_mask):
        batch = st.best_send_times(st.Profiles.from_dense(dense), pop, zones, zone_of_user, now, allowed=allowed)
        for u in range(users):
            row_mask = None if allowed is None else (allowed if allowed.ndim == 1 else allowed[u])
            one = st.best_send_at(st.posterior(dense[u], pop), zones[zone_of_user[u]], now, allowed=row_mask)
            assert batch[u] == (-1 if one is None else int(one.timestamp())), u
    assert (batch == -1).sum() >= 1


def test_allowed_hours_ask_the_predicate_for_the_coming_day_only() -> None:
    # 16:10 Monday in Shanghai: the coming hours are Monday 17:00 … Tuesday 16:00
    mask = st.allowed_hours(SHANGHAI, NOW, lambda at: 9 <= at.hour < 20)
    assert mask.shape == (st.HOURS,)
    assert set(np.flatnonzero(mask)) == {17, 18, 19} | {24 + h for h in range(9, 17)}
    asked: list[datetime] = []
    st.allowed_hours(SHANGHAI, NOW, lambda at: asked.append(at) or True, within=timedelta(hours=3))
    assert [a.hour for a in asked] == [17, 18, 19] and all(a.tzinfo is SHANGHAI for a in asked)


def test_local_profiles_count_each_response_in_its_users_zone() -> None:
    at = int(datetime(2026, 3, 2, 12, 30, tzinfo=UTC).timestamp())  # Monday 20:30 Shanghai, 13:30 Berlin
    profiles = st.local_profiles([0, 0, 1, 1], [at, at + 3600, at, at], [SHANGHAI, BERLIN], [0, 1, 1])
    assert profiles.users == 3
    dense = profiles.dense()
    assert dense[0, 20] == 1 and dense[0, 21] == 1
    assert dense[1, 13] == 2 and dense[2].sum() == 0
    assert st.local_profiles([], [], [SHANGHAI], [0, 0]).dense().sum() == 0
