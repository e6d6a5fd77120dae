"""Flows left half-way leave no phone number or code readable in the database files.

Conversation drafts are persisted (PTB writes user_data every second); they hold a number
being proven or a forwarded SMS. The raw SQLite file and its write-ahead log are scanned
for every form of the numbers and for the codes sent.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind
from tests.flow.recording import text_update
from tests.flow.test_autorecharge import monthly_rule_until_code

RULE_LINE = "+85512345678"  # user 555: auto-recharge waiting for its code
SMS_LINES = ("+855969999998", "+855969999997")  # user 556: forwarded SMS waiting for a line
BINDING = "+85592345678"  # user 557: binding waiting for its code


def forms(e164: str) -> list[str]:
    """How a Cambodian number can be written: 855..., 0..., and spaced out."""
    national = "0" + e164.removeprefix("+855")
    spaced = f"{national[:3]} {national[3:6]} {national[6:]}"
    return [e164.removeprefix("+"), national, spaced]


def database_bytes(harness: BotHarness) -> dict[str, bytes]:
    db_file = Path(harness.components.db.url.split("///", 1)[1])
    files = [db_file, db_file.with_name(db_file.name + "-wal")]
    assert files[0].exists()
    return {path.name: path.read_bytes() for path in files if path.exists()}


async def test_half_finished_flows_leave_nothing_readable_in_the_database_files(
        harness: BotHarness) -> None:
    await bind(harness, RULE_LINE, user_id=555)
    await monthly_rule_until_code(harness)
    rule_code = harness.sms.last_code(RULE_LINE)

    for number in SMS_LINES:
        await bind(harness, number, user_id=556)
    sms = (f"Your main balance is $1.25 on {forms(SMS_LINES[1])[1]}, valid until 25/12/2026. "
           "Thank you for using Metfone.")
    forwarded = text_update(sms, user_id=556)
    forwarded["message"]["forward_origin"] = {
        "type": "hidden_user", "sender_user_name": "Metfone", "date": int(time.time())}
    await harness.send(forwarded)
    assert "Which line" in harness.api.texts(556)[-1]

    await harness.send(text_update("/bind", user_id=557))
    await harness.send(text_update(forms(BINDING)[2], user_id=557))
    binding_code = harness.sms.last_code(BINDING)
    await harness.send(text_update("000000" if binding_code != "000000" else "111111",
                                   user_id=557))

    await harness.app.update_persistence()  # what PTB writes every second
    stored = harness.app.persistence
    assert stored is not None
    assert (await stored.get_user_data())[557] != {}  # the drafts are there, readable to us

    files = database_bytes(harness)
    assert "topup.db-wal" in files  # the writes of this test are (at least) in the WAL
    secrets = [form for number in (RULE_LINE, *SMS_LINES, BINDING) for form in forms(number)]
    secrets += [rule_code, binding_code]
    for name, content in files.items():
        for secret in secrets:
            assert secret.encode() not in content, f"{secret!r} readable in {name}"
