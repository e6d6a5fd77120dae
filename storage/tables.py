"""The schema, as SQLAlchemy Core tables. Changes reach databases only through Alembic."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)

from storage.types import BigId, UtcDateTime

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

users = Table(
    "users", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # Telegram user id
    Column("language", String(16)),
    Column("timezone", String(64)),
    Column("quiet_start_minute", SmallInteger),  # minute of the local day; NULL: no quiet hours
    Column("quiet_end_minute", SmallInteger),
    Column("reachable", Boolean, nullable=False, server_default=true()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # What the user asked to receive (migration 0012): off until they turn it on.
    Column("monthly_summary", Boolean, nullable=False, server_default=false()),
    Column("promotions", Boolean, nullable=False, server_default=false()),
    # /forget (migration 0013): the row stays (the ledger's key) without the user's settings.
    Column("forgotten_at", UtcDateTime),
    CheckConstraint("quiet_start_minute BETWEEN 0 AND 1439", name="quiet_start"),
    CheckConstraint("quiet_end_minute BETWEEN 0 AND 1439", name="quiet_end"),
)

lines = Table(
    "lines", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("owner_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("operator", String(16), nullable=False),  # an eSIM's: the network it uses here
    Column("kind", String(8), nullable=False, server_default="sim"),  # sim | esim
    # A SIM's number; an eSIM usually has none (data only).
    Column("phone_enc", Text),
    Column("phone_index", String(64), unique=True),
    # An eSIM's ICCID: NULL while its order is on its way.
    Column("iccid_enc", Text),
    Column("iccid_index", String(64), unique=True),
    Column("nickname", String(64)),
    Column("verified_at", UtcDateTime),
    Column("next_check_at", UtcDateTime, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("plan_product_id", String(64)),  # the plan the user chose from the catalog
    Column("warn_balance_minor", BigInteger),  # low-balance warning threshold (line currency)
    Column("warn_data_mb", Integer),  # low-data warning threshold
    # Unbound lines keep their row (history, charges) but belong to nobody in practice.
    Column("unbound_at", UtcDateTime),
    # --- the balance sweep (issue 6) ---
    Column("check_claimed_until", UtcDateTime),  # a sweeper's lease
    Column("check_failures", SmallInteger, nullable=False, server_default="0"),  # in a row
    Column("check_error", String(32)),  # the kind of the last failed read
    Column("check_failure_told", Boolean, nullable=False, server_default=false()),
    # Low-balance / low-data warning episodes: one warning each, until it recovers.
    Column("balance_low", Boolean, nullable=False, server_default=false()),
    Column("balance_episode", Integer, nullable=False, server_default="0"),
    Column("data_low", Boolean, nullable=False, server_default=false()),
    Column("data_episode", Integer, nullable=False, server_default="0"),
    # /forget (migration 0013): a line its charges still reference stays as a tombstone, with
    # no number, blind index, ICCID or name.
    Column("forgotten_at", UtcDateTime),
    CheckConstraint("kind <> 'sim' OR forgotten_at IS NOT NULL "
                    "OR (phone_enc IS NOT NULL AND phone_index IS NOT NULL)",
                    name="sim_has_number"),
)

otp_challenges = Table(
    "otp_challenges", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # NULL: its user was forgotten, but the code still counts against the number (0013).
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE")),
    Column("phone_index", String(64), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("subject", String(64)),  # what the code confirms, e.g. a rule id; NULL for binding
    Column("code_hash", String(64), nullable=False),  # keyed hash only, never the code
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("locked_until", UtcDateTime),
    Column("consumed_at", UtcDateTime),
    Index("ix_otp_challenges_phone_index_created_at", "phone_index", "created_at"),
    Index("ix_otp_challenges_user_id_created_at", "user_id", "created_at"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False, index=True),
    Column("actor", String(64), nullable=False),  # "user:<id>", "cli", "system", "admin:<id>"
    Column("action", String(64), nullable=False),
    Column("subject", String(64)),
    Column("details", JSON, nullable=False),  # never secrets: ids, operators, masked numbers
)

# Every reading of a line (kept as history for charts), with where it came from.
line_readings = Table(
    "line_readings", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("line_id", BigId,
           ForeignKey("lines.id", ondelete="CASCADE"), nullable=False),
    Column("source", String(16), nullable=False),  # provider, user, estimate
    Column("read_at", UtcDateTime, nullable=False),
    Column("balance_minor", BigInteger),
    Column("currency", String(3)),
    Column("data_mb", Integer),
    Column("validity_end", UtcDateTime),
    Column("recorded_at", UtcDateTime, nullable=False),
    Index("ix_line_readings_line_id_read_at", "line_id", "read_at"),
)

recharge_rules = Table(
    "recharge_rules", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("line_id", BigId,
           ForeignKey("lines.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("owner_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("trigger_kind", String(16), nullable=False),  # calendar, balance_below, data_below,
    #                                                    keep_alive
    Column("calendar", String(8)),  # monthly, weekly, every_n (trigger = calendar)
    Column("calendar_value", Integer),  # day of month, weekday, or N days
    Column("calendar_anchor", String(10)),  # local ISO date counting starts from (every_n)
    Column("threshold_minor", BigInteger),  # balance_below
    Column("threshold_mb", Integer),  # data_below
    Column("days_before", Integer),  # keep_alive: top up this many days before validity ends
    Column("product_id", String(64)),  # buy this plan ...
    Column("amount_minor", BigInteger),  # ... or this much airtime
    Column("currency", String(3), nullable=False),
    Column("monthly_cap_minor", BigInteger, nullable=False),
    Column("approval", String(8), nullable=False),  # ask, auto
    Column("status", String(16), nullable=False),  # awaiting_otp, active, paused, disabled
    # What the user last confirmed with a code: a change above either needs a new code.
    Column("confirmed_amount_minor", BigInteger, nullable=False, server_default="0"),
    Column("confirmed_cap_minor", BigInteger, nullable=False, server_default="0"),
    Column("next_run_at", UtcDateTime, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # --- the scheduler (issue 6) ---
    Column("claimed_until", UtcDateTime),  # a sweeper's lease on a due calendar run
    Column("episode", Integer, nullable=False, server_default="0"),  # threshold crossings
    Column("in_episode", Boolean, nullable=False, server_default=false()),
    Column("reminded_for", UtcDateTime),  # the run the 24-hour reminder went out for
    Column("skip_run_at", UtcDateTime),  # the run the user chose to skip
    CheckConstraint("monthly_cap_minor > 0", name="cap_positive"),
)

# python-telegram-bot persistence: conversation states as JSON; user/chat/bot data as JSON
# encrypted with the field cipher (drafts hold numbers being proven, forwarded SMS texts).
ptb_conversations = Table(
    "ptb_conversations", metadata,
    Column("name", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),  # the conversation key as JSON
    Column("state", Text, nullable=False),  # JSON
)
ptb_user_data = Table(
    "ptb_user_data", metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("data_enc", Text, nullable=False),
)
ptb_chat_data = Table(
    "ptb_chat_data", metadata,
    Column("chat_id", BigInteger, primary_key=True, autoincrement=False),
    Column("data_enc", Text, nullable=False),
)
ptb_bot_data = Table(
    "ptb_bot_data", metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("data_enc", Text, nullable=False),
)

# --- money (issue 5) ------------------------------------------------------------------

charges = Table(
    "charges", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # What caused the charge: "manual:<user>:<nonce>", "rule:<id>:<period>",
    # "rule:<id>:episode:<n>". The same cause can never charge twice.
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("reference", String(64), nullable=False, unique=True),  # ours, sent to the provider
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("line_id", BigId, ForeignKey("lines.id"), nullable=False, index=True),
    Column("rule_id", BigId, ForeignKey("recharge_rules.id")),
    Column("cause", String(16), nullable=False),  # manual, scheduled, low_balance, keep_alive
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("product_id", String(64)),
    Column("state", String(20), nullable=False, index=True),
    Column("expires_at", UtcDateTime),  # an approval request nobody answers expires
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, index=True),  # retry or pending look-up due
    Column("failure_reason", String(64)),
    Column("provider_tx_enc", Text),  # the provider's transaction id, encrypted
    Column("balance_after_minor", BigInteger),
    Column("validity_end_after", UtcDateTime),
    # What a real provider reports (migration 0008): the line received, it took, its fee
    # or discount (in provider_currency).
    Column("delivered_minor", BigInteger),
    Column("delivered_currency", String(3)),
    Column("provider_cost_minor", BigInteger),
    Column("provider_fee_minor", BigInteger),
    Column("provider_discount_minor", BigInteger),
    Column("provider_currency", String(3)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The reading a rule charged on (migration 0014), kept whole so its messages can say it
    # after the reading itself is gone: only the figure the rule fired on (balance, data
    # or validity end), its source, when it was read, and the provider that read it (an
    # eSIM's). NULL for manual and calendar charges, and for charges made before.
    Column("trigger_source", String(16)),  # provider, user, estimate
    Column("trigger_read_at", UtcDateTime),
    Column("trigger_balance_minor", BigInteger),
    Column("trigger_currency", String(3)),
    Column("trigger_data_mb", Integer),
    Column("trigger_validity_end", UtcDateTime),
    Column("trigger_read_by", String(32)),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
)

# A line has at most one open charge (awaiting approval or in flight): a second trigger is
# pointed at the open one (issue 12). The states are bot.domain.charges.OPEN_STATES.
OPEN_CHARGE_PREDICATE = "state IN ('awaiting_approval', 'approved', 'submitted')"
Index("uq_charges_line_id_open", charges.c.line_id, unique=True,
      sqlite_where=text(OPEN_CHARGE_PREDICATE), postgresql_where=text(OPEN_CHARGE_PREDICATE))

holds = Table(
    "holds", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("charge_id", BigId, ForeignKey("charges.id"), nullable=False, unique=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(12), nullable=False),  # open, captured, released
    Column("created_at", UtcDateTime, nullable=False),
    Column("settled_at", UtcDateTime),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
)

# Append-only: a balance is the sum of a user's entries in one currency; rows are never
# updated or deleted. Each charge and payment can add each kind of entry once.
ledger_entries = Table(
    "ledger_entries", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),  # signed: + credit, - debit
    Column("kind", String(16), nullable=False),  # payment, operator_credit, hold, release, refund
    Column("charge_id", BigId, ForeignKey("charges.id")),
    Column("payment_id", BigId, ForeignKey("wallet_payments.id")),
    Column("memo", String(128)),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_ledger_entries_user_id_currency", "user_id", "currency"),
    Index("uq_ledger_entries_charge_kind", "charge_id", "kind", unique=True),
    Index("uq_ledger_entries_payment_kind", "payment_id", "kind", unique=True),
)

wallet_payments = Table(
    "wallet_payments", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("source", String(16), nullable=False),  # telegram, operator
    # The blind index of Telegram's charge id or of "operator:<reference>" (UNIQUE: a
    # replay credits nothing); the reference itself is encrypted beside it.
    Column("external_id", String(160), nullable=False, unique=True),
    # Nullable only because SQLite cannot tighten a column of a table others reference
    # without rebuilding it (migration 0007); every write sets it.
    Column("external_ref_enc", Text),
    Column("provider_charge_enc", Text),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payload", String(128)),
    Column("actor", String(64), nullable=False),  # user:<id>, cli, admin:<id>
    Column("created_at", UtcDateTime, nullable=False),
    Column("refunded_at", UtcDateTime),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
)

# Every invoice the wallet issues (issue 12): a Telegram payment is credited only as the
# invoice it pays, at most once, and only when it paid the invoice's price in its currency.
wallet_invoices = Table(
    "wallet_invoices", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),  # credited to the wallet
    Column("currency", String(3), nullable=False),
    Column("price_minor", BigInteger, nullable=False),  # what Telegram is asked to charge
    Column("price_currency", String(3), nullable=False),  # XTR, or the provider currency
    Column("created_at", UtcDateTime, nullable=False),
    Column("paid_at", UtcDateTime),
    Column("payment_id", BigId, ForeignKey("wallet_payments.id"), unique=True),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("price_minor > 0", name="price_positive"),
)

# Bakong KHQRs the wallet issued (issue 15): each is polled by its md5 until it is paid or
# its expiry plus a grace period has passed (next_check_at NULL: no longer polled). A paid
# one is credited once: the md5 (here and as the payment's external id) and the Bakong
# transaction hash (its blind index) are UNIQUE. The payer's account id is encrypted.
khqr_invoices = Table(
    "khqr_invoices", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("md5", String(32), nullable=False, unique=True),
    Column("bill_number", String(25), nullable=False, unique=True),  # our reference, tag 62
    Column("payload", Text, nullable=False),  # the KHQR string (our account and the amount)
    Column("amount_minor", BigInteger, nullable=False),  # what the QR asks
    Column("currency", String(3), nullable=False),
    Column("credit_minor", BigInteger, nullable=False),  # what paying it exactly credits
    Column("credit_currency", String(3), nullable=False),  # the wallet's currency
    Column("khr_per_usd", Integer),  # the rate shown to the user, when the two differ
    Column("state", String(12), nullable=False),  # open, paid, expired, cancelled
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("next_check_at", UtcDateTime),
    Column("claimed_until", UtcDateTime),  # a poller's lease
    Column("checks", Integer, nullable=False, server_default="0"),
    Column("last_checked_at", UtcDateTime),
    Column("closed_at", UtcDateTime),  # expired or cancelled
    Column("paid_at", UtcDateTime),
    Column("transaction_index", String(64), unique=True),
    Column("transaction_hash_enc", Text),
    Column("paid_minor", BigInteger),  # as Bakong said it arrived
    Column("paid_currency", String(3)),
    Column("payer_bank", String(32)),  # the part after @ of the payer's account id
    Column("payer_account_enc", Text),
    Column("amount_differs", Boolean, nullable=False, server_default=false()),
    Column("payment_id", BigId, ForeignKey("wallet_payments.id"), unique=True),
    Index("ix_khqr_invoices_next_check_at", "next_check_at"),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("credit_minor > 0", name="credit_positive"),
    CheckConstraint("state IN ('open', 'paid', 'expired', 'cancelled')", name="state_known"),
)

# Telegram payments that were not credited: forged or unknown payload, another user's
# invoice, an invoice paid before, or a total or currency that is not the invoice's. Stars
# are refunded; anything else waits for an admin. Charge ids are kept encrypted.
payment_disputes = Table(
    "payment_disputes", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("charge_index", String(64), nullable=False, unique=True),  # a replay adds nothing
    Column("charge_enc", Text, nullable=False),
    Column("provider_charge_enc", Text),
    Column("invoice_id", BigId, ForeignKey("wallet_invoices.id")),
    Column("paid_minor", BigInteger, nullable=False),  # as the update said, even <= 0
    Column("paid_currency", String(3), nullable=False),
    Column("reason", String(32), nullable=False),  # forged, wrong_user, already_paid, mismatch
    Column("status", String(16), nullable=False),  # held, refunded
    Column("created_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime),
    Column("resolved_by", String(64)),
)

# Transactional outbox: written with the state change that causes the message, sent by the
# dispatcher under Telegram's limits. The dedupe key makes every message exactly one row.
notifications = Table(
    "notifications", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("chat_id", BigInteger, nullable=False),
    Column("dedupe_key", String(160), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),  # receipt, approval_request, warning, ...
    Column("params", JSON, nullable=False),  # rendered in the user's language when sent
    Column("status", String(12), nullable=False),  # pending, sent, failed, dropped
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("claimed_until", UtcDateTime),  # a dispatcher's lease
    Column("message_id", BigInteger),  # what Telegram returned, to edit it later
    Column("last_error", String(200)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    # A chat's messages go out in order: the dispatcher looks for an earlier pending one.
    Index("ix_notifications_chat_id_status_id", "chat_id", "status", "id"),
    # An admin's reply names the message it answers: (chat, message id) finds its row.
    Index("ix_notifications_chat_id_message_id", "chat_id", "message_id"),
)

# Support requests (issue 16): a user's report, optionally about one of their charges; the
# admins answer by replying to its message in an admin chat. A report that a charge was
# doubled or not received is flagged until it is resolved. One open request per charge.
support_tickets = Table(
    "support_tickets", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("charge_id", BigId, ForeignKey("charges.id")),
    Column("category", String(16), nullable=False),  # general, failed, charged_twice, ...
    Column("status", String(12), nullable=False),  # open, resolved
    Column("flagged", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),  # its last message
    Column("resolved_at", UtcDateTime),
    Column("resolved_by", String(64)),  # admin:<id>
    Index("ix_support_tickets_status_flagged", "status", "flagged"),
    CheckConstraint("status IN ('open', 'resolved')", name="status_known"),
    CheckConstraint("category IN ('general', 'failed', 'charged_twice', 'not_received')",
                    name="category_known"),
)
OPEN_TICKET_PREDICATE = "status = 'open'"
Index("uq_support_tickets_charge_id_open", support_tickets.c.charge_id, unique=True,
      sqlite_where=text(OPEN_TICKET_PREDICATE), postgresql_where=text(OPEN_TICKET_PREDICATE))

# Every message of a request, either way, its text encrypted. ``source`` names the Telegram
# message it came from (chat:message id), UNIQUE: an update handled twice adds it once.
support_messages = Table(
    "support_messages", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ticket_id", BigId, ForeignKey("support_tickets.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("direction", String(8), nullable=False),  # user, admin
    Column("author", String(64), nullable=False),  # user:<id>, admin:<id>
    Column("text_enc", Text, nullable=False),
    Column("source", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("direction IN ('user', 'admin')", name="direction_known"),
)

# What each sweeper did last: `topup-bot status` shows it. One row per job and worker.
scheduler_runs = Table(
    "scheduler_runs", metadata,
    Column("job", String(32), primary_key=True),
    Column("worker", String(64), primary_key=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("processed", Integer, nullable=False),
    Column("failures", JSON, nullable=False),  # kind -> count, in that run
)

# Our float at the top-up provider (issue 13): an episode opens when a sweep reads it below
# PROVIDER_FLOAT_ALERT (the admins are told once) and closes when it is back above.
provider_float_episodes = Table(
    "provider_float_episodes", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("backend", String(16), nullable=False),  # reloadly, dingconnect
    Column("currency", String(3), nullable=False),
    Column("threshold_minor", BigInteger, nullable=False),
    Column("lowest_minor", BigInteger, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
)
OPEN_EPISODE_PREDICATE = "closed_at IS NULL"
Index("uq_provider_float_episodes_backend_open", provider_float_episodes.c.backend,
      unique=True, sqlite_where=text(OPEN_EPISODE_PREDICATE),
      postgresql_where=text(OPEN_EPISODE_PREDICATE))

# A day's reconciliation of our charges against the provider's transactions: one run per
# backend and day (run again, it is replaced), with every difference it found.
reconciliation_runs = Table(
    "reconciliation_runs", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("backend", String(16), nullable=False),
    Column("day", String(10), nullable=False),  # YYYY-MM-DD, in the bot's default zone
    Column("ours", Integer, nullable=False),  # our charges sent that day
    Column("theirs", Integer, nullable=False),  # the provider's transactions that day
    Column("differences", Integer, nullable=False),
    Column("ran_at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),  # cli, system
    UniqueConstraint("backend", "day", name="uq_reconciliation_runs_backend_day"),
)

reconciliation_differences = Table(
    "reconciliation_differences", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigId, ForeignKey("reconciliation_runs.id", ondelete="CASCADE"),
           nullable=False, index=True),
    # missing_at_provider, unknown_to_us, status_mismatch, amount_mismatch
    Column("kind", String(24), nullable=False),
    Column("reference", String(150), nullable=False),  # ours (a hash of the charge's cause)
    Column("charge_id", BigId),
    Column("our_state", String(20)),
    Column("their_status", String(16)),
    Column("our_amount_minor", BigInteger),
    Column("their_amount_minor", BigInteger),
    Column("currency", String(3)),
)

# The simulated carrier's own world: it stands in for the carriers and the aggregator,
# so it keeps its state here the way a provider keeps it on its side.
sim_lines = Table(
    "sim_lines", metadata,
    Column("phone_index", String(64), primary_key=True),
    Column("phone_enc", Text, nullable=False),
    Column("operator", String(16), nullable=False),
    Column("balance_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("data_mb", Integer, nullable=False),
    Column("validity_end", UtcDateTime, nullable=False),
    Column("last_topup_at", UtcDateTime),
    Column("data_expires_at", UtcDateTime),
    Column("as_of", UtcDateTime, nullable=False),  # balance and data above are as of this moment
    # Usage since then that has not yet made a whole cent / MB, in 1/86400 units.
    Column("spend_carry", Integer, nullable=False, server_default="0"),
    Column("data_carry", Integer, nullable=False, server_default="0"),
    Column("daily_spend_minor", Integer, nullable=False),
    Column("daily_data_mb", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("balance_minor >= 0", name="balance_not_negative"),
    CheckConstraint("data_mb >= 0", name="data_not_negative"),
)

sim_topups = Table(
    "sim_topups", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("reference", String(128), nullable=False),
    Column("provider_tx_id", String(64), nullable=False, unique=True),
    Column("phone_index", String(64), ForeignKey("sim_lines.phone_index"), nullable=False),
    Column("product_id", String(64)),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # pending, succeeded, failed
    Column("failure_reason", String(64)),
    Column("duplicate", Boolean, nullable=False, server_default=false()),  # paid twice (fault)
    Column("created_at", UtcDateTime, nullable=False),
    Column("settle_at", UtcDateTime),
    Column("settled_at", UtcDateTime),
    Column("balance_after_minor", BigInteger),
    Column("data_after_mb", Integer),
    Column("validity_end_after", UtcDateTime),
)

# The simulated provider never pays one reference twice unless the "pay twice" fault (the
# failure seen in the wild) is switched on; those rows are marked duplicate.
Index("uq_sim_topups_reference_first", sim_topups.c.reference, unique=True,
      sqlite_where=text("NOT duplicate"), postgresql_where=text("NOT duplicate"))
# A balance read asks whether a line has top-ups waiting to settle (issue 6).
Index("ix_sim_topups_phone_index_status", sim_topups.c.phone_index, sim_topups.c.status)

# --- the simulated eSIM provider (ESIM_BACKEND=simulated): its side of the world ---------

sim_esims = Table(
    "sim_esims", metadata,
    Column("iccid_index", String(64), primary_key=True),
    Column("iccid_enc", Text, nullable=False),
    Column("order_id", BigId, nullable=False),
    Column("package_id", String(64), nullable=False),
    Column("matching_id", String(64), nullable=False, unique=True),
    Column("total_mb", Integer),  # NULL: unlimited
    Column("used_mb", Integer, nullable=False, server_default="0"),  # as of ``as_of``
    Column("daily_mb", Integer, nullable=False),  # how fast its user spends data
    Column("validity_days", Integer, nullable=False),  # counted from installation
    Column("installed_at", UtcDateTime),
    Column("expires_at", UtcDateTime),
    Column("as_of", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

sim_esim_orders = Table(
    "sim_esim_orders", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # Our reference, as Airalo keeps it: not unique (ordering is not idempotent there).
    Column("description", String(255), index=True),
    Column("kind", String(8), nullable=False),  # sim | topup
    Column("package_id", String(64), nullable=False),
    Column("iccid_index", String(64), nullable=False),
    Column("price_minor", BigInteger, nullable=False),
    Column("net_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
)
