"""The one-time-code policy as pure decisions: resend limits, lockout, verdicts, typing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.otp import (
    CODE_DIGITS,
    ChallengeView,
    CheckResult,
    OtpPolicy,
    Refused,
    SendRefusal,
    is_well_formed,
    lock_after_failure,
    looks_like_code,
    may_send,
    normalize_code,
    precheck,
    tries_left,
)

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
POLICY = OtpPolicy()
KHMER_DIGITS = "០១២៣៤៥៦៧៨៩"


def challenge(*, age: timedelta = timedelta(0), lifetime: timedelta = timedelta(minutes=5),
              attempts: int = 0, locked_until: datetime | None = None,
              consumed_at: datetime | None = None) -> ChallengeView:
    created = NOW - age
    return ChallengeView(created_at=created, expires_at=created + lifetime, attempts=attempts,
                         locked_until=locked_until, consumed_at=consumed_at)


def to_khmer(digits: str) -> str:
    return "".join(KHMER_DIGITS[int(d)] for d in digits)


# --- the defaults ------------------------------------------------------------------------

def test_default_policy_values() -> None:
    assert POLICY.lifetime == timedelta(minutes=5)
    assert POLICY.max_wrong_tries == 5
    assert POLICY.lockout == timedelta(minutes=15)
    assert POLICY.resend_cooldown == timedelta(seconds=60)
    assert POLICY.max_sends_per_hour == 5
    assert CODE_DIGITS == 6


# --- may_send ----------------------------------------------------------------------------

def test_first_code_may_be_sent() -> None:
    assert may_send(POLICY, NOW, None, 0, None) is None


def test_resend_within_cooldown_is_refused_until_a_minute_after_the_last() -> None:
    latest = challenge(age=timedelta(seconds=30))
    assert may_send(POLICY, NOW, latest, 1, latest.created_at) == Refused(
        SendRefusal.COOLDOWN, latest.created_at + timedelta(seconds=60))


def test_resend_one_second_before_cooldown_ends_is_refused() -> None:
    latest = challenge(age=timedelta(seconds=59))
    refused = may_send(POLICY, NOW, latest, 1, latest.created_at)
    assert refused == Refused(SendRefusal.COOLDOWN, NOW + timedelta(seconds=1))


@pytest.mark.parametrize("age", [timedelta(seconds=60), timedelta(seconds=61),
                                 timedelta(minutes=10)])
def test_resend_after_cooldown_is_allowed(age: timedelta) -> None:
    latest = challenge(age=age)
    assert may_send(POLICY, NOW, latest, 1, latest.created_at) is None


def test_consumed_challenge_allows_an_immediate_new_code() -> None:
    latest = challenge(age=timedelta(seconds=5), consumed_at=NOW - timedelta(seconds=1))
    assert may_send(POLICY, NOW, latest, 1, latest.created_at) is None


def test_lockout_refuses_until_it_ends() -> None:
    until = NOW + timedelta(minutes=7)
    latest = challenge(age=timedelta(minutes=8), attempts=5, locked_until=until)
    assert may_send(POLICY, NOW, latest, 1, latest.created_at) == Refused(
        SendRefusal.LOCKED, until)


def test_lockout_wins_over_cooldown_and_hourly_cap() -> None:
    until = NOW + timedelta(minutes=15)
    latest = challenge(age=timedelta(seconds=1), attempts=5, locked_until=until)
    assert may_send(POLICY, NOW, latest, 9, NOW - timedelta(minutes=30)) == Refused(
        SendRefusal.LOCKED, until)


def test_lockout_applies_even_to_a_consumed_challenge() -> None:
    until = NOW + timedelta(minutes=1)
    latest = challenge(age=timedelta(minutes=2), locked_until=until,
                       consumed_at=NOW - timedelta(minutes=1))
    assert may_send(POLICY, NOW, latest, 1, latest.created_at) == Refused(
        SendRefusal.LOCKED, until)


@pytest.mark.parametrize("ended", [timedelta(0), timedelta(seconds=1), timedelta(hours=2)])
def test_ended_lockout_no_longer_refuses(ended: timedelta) -> None:
    latest = challenge(age=timedelta(minutes=20), attempts=5, locked_until=NOW - ended)
    assert may_send(POLICY, NOW, latest, 1, latest.created_at) is None


def test_hourly_cap_refuses_until_an_hour_after_the_oldest_send() -> None:
    oldest = NOW - timedelta(minutes=40)
    latest = challenge(age=timedelta(minutes=5))
    assert may_send(POLICY, NOW, latest, 5, oldest) == Refused(
        SendRefusal.HOURLY_CAP, oldest + timedelta(hours=1))


def test_hourly_cap_applies_without_a_latest_challenge_of_this_user() -> None:
    oldest = NOW - timedelta(minutes=59)
    assert may_send(POLICY, NOW, None, 7, oldest) == Refused(
        SendRefusal.HOURLY_CAP, NOW + timedelta(minutes=1))


def test_hourly_cap_without_an_oldest_time_waits_an_hour_from_now() -> None:
    assert may_send(POLICY, NOW, None, 5, None) == Refused(
        SendRefusal.HOURLY_CAP, NOW + timedelta(hours=1))


def test_below_the_hourly_cap_is_allowed() -> None:
    assert may_send(POLICY, NOW, challenge(age=timedelta(minutes=2)), 4,
                    NOW - timedelta(minutes=50)) is None


def test_cooldown_is_reported_before_the_hourly_cap() -> None:
    latest = challenge(age=timedelta(seconds=10))
    refused = may_send(POLICY, NOW, latest, 5, NOW - timedelta(minutes=30))
    assert refused is not None
    assert refused.reason is SendRefusal.COOLDOWN


def test_a_custom_policy_is_honoured() -> None:
    policy = OtpPolicy(resend_cooldown=timedelta(seconds=10), max_sends_per_hour=2)
    assert may_send(policy, NOW, challenge(age=timedelta(seconds=10)), 1, NOW) is None
    assert may_send(policy, NOW, challenge(age=timedelta(seconds=10)), 2, NOW) == Refused(
        SendRefusal.HOURLY_CAP, NOW + timedelta(hours=1))


# --- the number's lockout, whoever asks ----------------------------------------------------

def test_a_locked_number_is_refused_to_an_account_with_no_challenge_of_its_own() -> None:
    until = NOW + timedelta(minutes=12)
    assert may_send(POLICY, NOW, None, 1, NOW - timedelta(minutes=3),
                    number_locked_until=until) == Refused(SendRefusal.LOCKED, until)


def test_a_locked_number_wins_over_the_accounts_own_unlocked_challenge() -> None:
    until = NOW + timedelta(minutes=12)
    latest = challenge(age=timedelta(minutes=10), consumed_at=NOW - timedelta(minutes=9))
    assert may_send(POLICY, NOW, latest, 2, latest.created_at,
                    number_locked_until=until) == Refused(SendRefusal.LOCKED, until)


def test_the_later_of_two_lockouts_is_the_one_to_wait_for() -> None:
    own = NOW + timedelta(minutes=3)
    number = NOW + timedelta(minutes=9)
    latest = challenge(age=timedelta(minutes=8), attempts=5, locked_until=own)
    assert may_send(POLICY, NOW, latest, 1, latest.created_at,
                    number_locked_until=number) == Refused(SendRefusal.LOCKED, number)
    assert may_send(POLICY, NOW, latest, 1, latest.created_at,
                    number_locked_until=NOW + timedelta(minutes=1)) == Refused(
        SendRefusal.LOCKED, own)


@pytest.mark.parametrize("ended", [timedelta(0), timedelta(seconds=1), timedelta(hours=2)])
def test_an_ended_lockout_of_the_number_no_longer_refuses(ended: timedelta) -> None:
    assert may_send(POLICY, NOW, None, 1, NOW - timedelta(minutes=20),
                    number_locked_until=NOW - ended) is None


_moments = st.timedeltas(min_value=timedelta(hours=-3), max_value=timedelta(hours=3))


@settings(deadline=None)
@given(locked_for=st.timedeltas(min_value=timedelta(microseconds=1),
                                max_value=timedelta(hours=2)),
       latest_age=st.none() | st.timedeltas(min_value=timedelta(0),
                                            max_value=timedelta(hours=2)),
       own_lock=st.none() | _moments, consumed=st.booleans(),
       sent_last_hour=st.integers(min_value=0, max_value=50))
def test_no_code_goes_to_a_locked_number_whatever_else_holds(
        locked_for: timedelta, latest_age: timedelta | None, own_lock: timedelta | None,
        consumed: bool, sent_last_hour: int) -> None:
    latest = None if latest_age is None else challenge(
        age=latest_age, locked_until=None if own_lock is None else NOW + own_lock,
        consumed_at=NOW if consumed else None)
    refused = may_send(POLICY, NOW, latest, sent_last_hour, NOW - timedelta(minutes=30),
                       number_locked_until=NOW + locked_for)
    assert refused is not None
    assert refused.reason is SendRefusal.LOCKED
    assert refused.retry_at >= NOW + locked_for  # never earlier than the number's lock ends


# --- precheck ----------------------------------------------------------------------------

def test_fresh_challenge_with_a_well_formed_code_goes_on_to_compare() -> None:
    assert precheck(POLICY, NOW, challenge(age=timedelta(minutes=1)), "123456") is None


def test_used_challenge_is_used_whatever_else_holds() -> None:
    used = challenge(age=timedelta(minutes=30), attempts=5, locked_until=NOW + timedelta(hours=1),
                     consumed_at=NOW - timedelta(minutes=29))
    assert precheck(POLICY, NOW, used, "123456") is CheckResult.USED
    assert precheck(POLICY, NOW, used, "junk") is CheckResult.USED


def test_locked_challenge_is_locked_before_expiry_and_form_are_looked_at() -> None:
    locked = challenge(age=timedelta(minutes=30), attempts=5,
                       locked_until=NOW + timedelta(minutes=1))
    assert precheck(POLICY, NOW, locked, "123456") is CheckResult.LOCKED
    assert precheck(POLICY, NOW, locked, "junk") is CheckResult.LOCKED


def test_ended_lock_falls_through_to_expiry() -> None:
    stale = challenge(age=timedelta(minutes=20), attempts=5, locked_until=NOW)
    assert precheck(POLICY, NOW, stale, "123456") is CheckResult.EXPIRED


@pytest.mark.parametrize("age", [timedelta(minutes=5), timedelta(minutes=5, seconds=1),
                                 timedelta(days=1)])
def test_expired_challenge(age: timedelta) -> None:
    assert precheck(POLICY, NOW, challenge(age=age), "123456") is CheckResult.EXPIRED


def test_just_before_expiry_is_still_alive() -> None:
    alive = challenge(age=timedelta(minutes=4, seconds=59))
    assert precheck(POLICY, NOW, alive, "123456") is None


def test_expired_wins_over_malformed() -> None:
    assert precheck(POLICY, NOW, challenge(age=timedelta(hours=1)), "x") is CheckResult.EXPIRED


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "12 456", "-12345",
                                  "១២៣៤៥៦", "１２３４５６", "²²²²²²", "123456\n"])
def test_malformed_code(code: str) -> None:
    assert precheck(POLICY, NOW, challenge(), code) is CheckResult.MALFORMED
    assert not is_well_formed(code)


# --- lock_after_failure and tries_left ---------------------------------------------------

@pytest.mark.parametrize("attempts_before", [0, 1, 2, 3])
def test_wrong_tries_before_the_fifth_do_not_lock(attempts_before: int) -> None:
    assert lock_after_failure(POLICY, NOW, attempts_before) is None


def test_fifth_wrong_try_locks_for_fifteen_minutes() -> None:
    assert lock_after_failure(POLICY, NOW, 4) == NOW + timedelta(minutes=15)


@pytest.mark.parametrize("attempts_before", [5, 6, 50])
def test_tries_past_the_limit_lock_too(attempts_before: int) -> None:
    assert lock_after_failure(POLICY, NOW, attempts_before) == NOW + timedelta(minutes=15)


def test_custom_limit_and_lockout() -> None:
    policy = OtpPolicy(max_wrong_tries=2, lockout=timedelta(minutes=1))
    assert lock_after_failure(policy, NOW, 0) is None
    assert lock_after_failure(policy, NOW, 1) == NOW + timedelta(minutes=1)


@pytest.mark.parametrize(("attempts", "left"), [(0, 5), (1, 4), (2, 3), (3, 2), (4, 1),
                                                (5, 0), (9, 0)])
def test_tries_left(attempts: int, left: int) -> None:
    assert tries_left(POLICY, attempts) == left


# --- normalize_code ----------------------------------------------------------------------

@pytest.mark.parametrize(("typed", "normalized"), [
    ("123456", "123456"),
    ("12 34 56", "123456"),
    ("123-456", "123456"),
    (" 1 2 3 - 4 5 6 \n", "123456"),
    ("០១២៣៤៥", "012345"),
    ("៦៧៨៩០១", "678901"),
    ("១2៣4៥6", "123456"),
    ("១២៣ ៤៥៦", "123456"),
    ("code: 123456", "123456"),
    ("abc123def456", "123456"),
    ("hello", ""),
    ("", ""),
    ("🙂🙂🙂", ""),
    ("١٢٣٤٥٦", ""),        # Arabic-Indic digits are not ours
    ("１２３４５６", ""),  # nor full-width ones
    ("²³¹", ""),
])
def test_normalize_code(typed: str, normalized: str) -> None:
    assert normalize_code(typed) == normalized


def test_normalized_typing_of_a_code_is_well_formed() -> None:
    assert is_well_formed(normalize_code("១២ ៣៤-៥៦"))


@given(st.text())
def test_normalize_code_yields_ascii_digits_only(typed: str) -> None:
    assert set(normalize_code(typed)) <= set("0123456789")


@given(st.text(alphabet="0123456789", min_size=1, max_size=12),
       st.text(alphabet=" -\t", max_size=3))
def test_khmer_and_spaced_typing_gives_the_ascii_digits(digits: str, separator: str) -> None:
    spaced = separator.join(to_khmer(digits))
    assert normalize_code(spaced) == digits
    assert normalize_code(separator.join(digits)) == digits


# --- looks_like_code ---------------------------------------------------------------------

@pytest.mark.parametrize("typed", ["123456", " 123 456 ", "12-34-56", "១២៣៤៥៦", "១២៣ ៤៥៦",
                                   "123456\n"])
def test_text_that_is_a_code(typed: str) -> None:
    assert looks_like_code(typed)


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "code 123456", "012 345 678",
                                   "+855 12 345 678", "$123456", "hello", "１２３４５６"])
def test_text_that_is_not_a_code(typed: str) -> None:
    assert not looks_like_code(typed)


@given(st.text(alphabet="0123456789", min_size=6, max_size=6),
       st.text(alphabet=" -", max_size=2))
def test_any_typed_layout_of_six_digits_looks_like_a_code(digits: str, separator: str) -> None:
    assert looks_like_code(separator.join(digits))
    assert looks_like_code(to_khmer(digits))
