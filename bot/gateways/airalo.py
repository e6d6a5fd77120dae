"""Airalo's Partner API v2 as an EsimProvider, over httpx.

Written from Airalo's developer documentation (the OpenAPI export of its pages: paths,
fields, example answers, the "Rate limits" and "Error handling" pages) and its official
Python SDK (endpoints, form fields):

* token: POST /token, form {client_id, client_secret, grant_type=client_credentials}; kept
  until shortly before it ends (at most 24 hours, what the docs' prose says, whatever the
  example's ``expires_in``) and fetched again once on a 401; the endpoint allows 3 a minute,
  so one token serves every call;
* packages: GET /packages?filter[country]=KH&include=topup, page by page: the local entry
  and the regional ones covering Cambodia; cached for ``catalog_ttl`` (Airalo asks partners
  to sync at least hourly and allows 40 calls a minute);
* an order: POST /orders {quantity=1, package_id, type=sim, description=<our reference>};
  a top-up: POST /orders/topups {package_id, iccid, description=<our reference>}. Neither is
  idempotent: an unknown outcome is looked for with GET /orders?filter[description]=...,
  whose match is SQL LIKE, so the description is compared exactly here;
* an eSIM's install code: GET /sims/{iccid}; its usage: GET /sims/{iccid}/usage, spaced to
  ``usage_per_second`` for the whole account (documented: 5 a second) and cached per eSIM
  for ``usage_cache`` (documented: 10 a minute per eSIM; Airalo itself refreshes usage about
  every 20 minutes); its top-ups: GET /sims/{iccid}/topups;
* our credit: GET /balance.

Refusals are HTTP 422 with a numeric ``code`` (11 credit, 13 operator maintenance, 23
top-up disabled, 33/34 stock, 43 bad request, 73 recycled eSIM) or a field map (validation);
either changes nothing at Airalo and becomes EsimRefused. A 429 (with Retry-After) did
nothing either and is waited out, a few times, before RateLimited. A timeout, a reset, a 5xx
or code 53 ("something unexpected") after an order was sent leaves its outcome unknown:
GatewayTimeout / GatewayError, for the caller to look the reference up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bot.clock import Clock
from bot.domain.charges import DeclineReason
from bot.domain.money import Money, MoneyError
from bot.gateways.esim import (
    EsimNotFound,
    EsimOrder,
    EsimPackage,
    EsimRefused,
    EsimStatus,
    EsimUsage,
    InstallCode,
    PackageKind,
)
from bot.gateways.http import (
    BearerToken,
    CachedToken,
    ProviderRefused,
    RateLimited,
    Sleep,
    decimal_of,
    parse_json,
    provider_client,
    retry_after_of,
    retrying_read,
    transport_error,
)
from bot.gateways.rate_limit import SpacedCalls
from bot.gateways.topup import GatewayError

log = logging.getLogger(__name__)

LIVE_URL = "https://partners-api.airalo.com/v2"
COUNTRY = "KH"
CURRENCY = "USD"  # Airalo prices and bills partners in US dollars
TOKEN_MARGIN = timedelta(minutes=5)
MAX_TOKEN_LIFETIME = timedelta(hours=24)
WIRE_TIME = "%Y-%m-%d %H:%M:%S"  # UTC
PAGE_SIZE = 100
MAX_PAGES = 20  # of packages or of orders found by one description: far more than exist
RATE_LIMIT_WAITS = 3  # 429s waited out in a row before RateLimited reaches the caller
MAX_RETRY_AFTER = timedelta(minutes=2)  # a longer wait is the caller's to schedule

_STATUS = {"NOT_ACTIVE": EsimStatus.NOT_INSTALLED, "ACTIVE": EsimStatus.ACTIVE,
           "FINISHED": EsimStatus.USED_UP, "EXPIRED": EsimStatus.EXPIRED,
           "RECYCLED": EsimStatus.RECYCLED, "UNKNOWN": EsimStatus.UNKNOWN}

# Business refusals (HTTP 422 {code, reason}); each leaves nothing ordered.
_REFUSALS = {
    11: DeclineReason.PROVIDER_BALANCE,  # insufficient Airalo credit
    13: DeclineReason.OPERATOR_UNAVAILABLE,  # the operator is under maintenance
    23: DeclineReason.PRODUCT_UNAVAILABLE,  # top-up disabled by the operator
    33: DeclineReason.PRODUCT_UNAVAILABLE,  # not enough eSIM stock
    34: DeclineReason.PRODUCT_UNAVAILABLE,  # package invalid or out of stock
    43: DeclineReason.DECLINED,  # bad request (an expired eSIM's top-up, among others)
    73: DeclineReason.ESIM_RECYCLED,
}
_UNEXPECTED = 53  # "something unexpected happened": nothing says whether it was done


@dataclass(frozen=True)
class AiraloConfig:
    client_id: str
    client_secret: str
    api_url: str = LIVE_URL  # the same host serves sandbox and live partner accounts
    timeout_seconds: float = 60.0
    catalog_ttl: timedelta = timedelta(hours=1)
    usage_per_second: int = 5  # the documented limit for the whole account
    usage_cache: timedelta = timedelta(minutes=1)

    @property
    def api_base(self) -> str:
        return self.api_url.rstrip("/")


class AiraloGateway:
    """EsimProvider over Airalo's Partner API v2."""

    def __init__(self, config: AiraloConfig, clock: Clock, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._client = provider_client(config.timeout_seconds, transport=transport)
        self._token = CachedToken(clock, self._fetch_token)
        self._catalog: tuple[list[EsimPackage], datetime] | None = None
        self._catalog_lock = asyncio.Lock()
        self._usage_turns = SpacedCalls(config.usage_per_second, timedelta(seconds=1), clock,
                                        sleep)
        self._usage: dict[str, EsimUsage] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- the token --------------------------------------------------------------------

    async def _fetch_token(self) -> BearerToken:
        config = self._config
        try:
            response = await self._client.post(
                f"{config.api_base}/token", headers={"Accept": "application/json"},
                data={"client_id": config.client_id, "client_secret": config.client_secret,
                      "grant_type": "client_credentials"})
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code == 429:
            raise RateLimited("token", retry_after_of(response))
        body = parse_json(response)
        if response.status_code in (401, 422):
            raise ProviderRefused("Airalo refused AIRALO_CLIENT_ID / AIRALO_CLIENT_SECRET "
                                  f"(HTTP {response.status_code})")
        data = body.get("data") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(data, dict) \
                or not data.get("access_token"):
            raise GatewayError(f"token: HTTP {response.status_code}")
        lifetime = min(timedelta(seconds=int(data.get("expires_in") or 0)), MAX_TOKEN_LIFETIME)
        margin = min(TOKEN_MARGIN, lifetime / 10)
        return BearerToken(str(data["access_token"]), self._clock.now() + lifetime - margin)

    # --- calls ------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    form: dict[str, str] | None = None,
                    turns: SpacedCalls | None = None) -> tuple[int, Any]:
        """One API call. A refused token is renewed and the call made once more, and a 429
        waited out (up to RATE_LIMIT_WAITS times): neither did anything at Airalo, so sending
        again is not blind."""
        renewed = False
        waits = 0
        while True:
            # The token first: a slot taken before a token fetch would fall due while it
            # runs, and the slots behind it would then all go at once (a burst of 429s).
            headers = {"Accept": "application/json",
                       "Authorization": f"Bearer {await self._token.value()}"}
            if turns is not None:
                await turns.wait_turn()
            try:
                response = await self._client.request(
                    method, f"{self._config.api_base}{path}", params=params, data=form,
                    headers=headers)
            except httpx.HTTPError as exc:
                raise transport_error(exc) from exc
            if response.status_code == 401 and not renewed:
                renewed = True
                await self._token.value(renew=True)
                continue
            if response.status_code == 429:
                retry_after = retry_after_of(response)
                if turns is not None:
                    turns.pause_until(self._clock.now() + retry_after)
                waits += 1
                if waits > RATE_LIMIT_WAITS or retry_after > MAX_RETRY_AFTER:
                    raise RateLimited(path, retry_after)
                log.info("Airalo %s: rate limited, waiting %s", path, retry_after)
                if turns is None:
                    await self._sleep(retry_after.total_seconds())
                continue
            body = parse_json(response)
            if response.status_code in (401, 403):
                raise ProviderRefused(f"{path}: HTTP {response.status_code} "
                                      f"{_reason(body)}".rstrip())
            if response.status_code >= 500:
                raise GatewayError(f"{path}: HTTP {response.status_code}")
            return response.status_code, body

    async def _read(self, path: str, params: dict[str, Any] | None = None, *,
                    turns: SpacedCalls | None = None) -> tuple[int, Any]:
        return await retrying_read(lambda: self._call("GET", path, params=params, turns=turns),
                                   self._sleep)

    # --- packages ---------------------------------------------------------------------

    async def _all_packages(self) -> list[EsimPackage]:
        async with self._catalog_lock:
            cached = self._catalog
            if cached is not None and self._clock.now() < cached[1]:
                return cached[0]
            found: list[EsimPackage] = []
            for page in range(1, MAX_PAGES + 1):
                status, body = await self._read("/packages", {
                    "filter[country]": COUNTRY, "include": "topup", "limit": PAGE_SIZE,
                    "page": page})
                if status != 200 or not isinstance(body, dict):
                    raise GatewayError(f"packages: HTTP {status}")
                entries = body.get("data")
                # The docs say pages after the first may come keyed by index: read both.
                if isinstance(entries, dict):
                    entries = list(entries.values())
                for entry in entries or []:
                    if isinstance(entry, dict):
                        found.extend(_packages_of(entry))
                meta = body.get("meta") or {}
                if page >= int(meta.get("last_page") or 1):
                    break
            found.sort(key=EsimPackage.shelf_order)
            self._catalog = (found, self._clock.now() + self._config.catalog_ttl)
            return found

    async def catalog(self) -> list[EsimPackage]:
        return list(await self._all_packages())

    async def packages(self) -> list[EsimPackage]:
        return [p for p in await self._all_packages() if p.kind is PackageKind.SIM]

    # --- orders -----------------------------------------------------------------------

    async def order(self, package_id: str, reference: str) -> EsimOrder:
        status, body = await self._call("POST", "/orders", form={
            "quantity": "1", "package_id": package_id, "type": "sim",
            "description": reference})
        return self._ordered(status, body, reference, "order")

    async def top_up(self, iccid: str, package_id: str, reference: str) -> EsimOrder:
        status, body = await self._call("POST", "/orders/topups", form={
            "package_id": package_id, "iccid": _checked(iccid), "description": reference})
        order = self._ordered(status, body, reference, "top-up")
        self._usage.pop(iccid, None)  # the next reading shows the new data
        return replace(order, iccid=iccid)  # its answer names no eSIM: it is this one

    def _ordered(self, status: int, body: Any, reference: str, what: str) -> EsimOrder:
        data = body.get("data") if isinstance(body, dict) else None
        if status == 200 and isinstance(data, dict):
            return _order(data, reference, self._clock.now())
        if status == 422:
            refusal = _refusal(body)
            if refusal is not None:
                if refusal.reason is DeclineReason.PRODUCT_UNAVAILABLE:
                    self._catalog = None  # the catalog moved: read it again
                raise refusal
        raise GatewayError(f"{what} {reference}: HTTP {status}")

    async def find_order(self, reference: str) -> EsimOrder | None:
        matches: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            status, body = await self._read("/orders", {
                "filter[description]": reference, "include": "sims", "limit": PAGE_SIZE,
                "page": page})
            if status != 200 or not isinstance(body, dict):
                raise GatewayError(f"orders of {reference}: HTTP {status}")
            matches.extend(item for item in body.get("data") or []
                           if isinstance(item, dict) and item.get("description") == reference)
            if page >= int((body.get("meta") or {}).get("last_page") or 1):
                break
        if not matches:
            return None
        if len(matches) > 1:
            log.error("Airalo has %d orders under reference %s", len(matches), reference)
        oldest = min(matches, key=lambda item: int(item.get("id") or 0))
        return _order(oldest, reference, self._clock.now())

    async def orders_between(self, start: datetime, end: datetime) -> list[EsimOrder]:
        """GET /orders?filter[created_at]=<first day> - <last day> (UTC days, page by page),
        then the exact moments kept."""
        last = end - timedelta(microseconds=1)
        days = f"{start.astimezone(UTC):%Y-%m-%d} - {last.astimezone(UTC):%Y-%m-%d}"
        found: list[EsimOrder] = []
        page = 1
        while True:
            status, body = await self._read("/orders", {
                "filter[created_at]": days, "include": "sims", "limit": PAGE_SIZE,
                "page": page})
            if status != 200 or not isinstance(body, dict):
                raise GatewayError(f"orders of {days}: HTTP {status}")
            for item in body.get("data") or []:
                if isinstance(item, dict):
                    order = _order(item, str(item.get("description") or ""), self._clock.now())
                    if start <= order.at < end:
                        found.append(order)
            if page >= int((body.get("meta") or {}).get("last_page") or 1):
                # Airalo lists the newest first; a report reads oldest first.
                return sorted(found, key=lambda o: (o.at, int(o.order_id)))
            page += 1

    # --- eSIMs ------------------------------------------------------------------------

    async def install_code(self, iccid: str) -> InstallCode:
        status, body = await self._read(f"/sims/{_checked(iccid)}")
        data = body.get("data") if isinstance(body, dict) else None
        if status == 404:
            raise EsimNotFound(f"no eSIM {iccid}")
        if status != 200 or not isinstance(data, dict):
            raise GatewayError(f"eSIM {iccid}: HTTP {status}")
        return _install_code(data)

    async def usage(self, iccid: str) -> EsimUsage:
        cached = self._usage.get(iccid)
        if cached is not None and self._clock.now() < cached.read_at + self._config.usage_cache:
            return cached
        status, body = await self._read(f"/sims/{_checked(iccid)}/usage",
                                        turns=self._usage_turns)
        data = body.get("data") if isinstance(body, dict) else None
        if status == 404:
            raise EsimNotFound(f"no eSIM {iccid}")
        if status != 200 or not isinstance(data, dict):
            raise GatewayError(f"usage of {iccid}: HTTP {status}")
        reading = _usage(iccid, data, self._clock.now())
        self._usage[iccid] = reading
        return reading

    async def topup_packages(self, iccid: str) -> list[EsimPackage]:
        status, body = await self._read(f"/sims/{_checked(iccid)}/topups")
        if status == 404:
            raise EsimNotFound(f"no eSIM {iccid}")
        if status == 422:
            raise _refusal(body) or GatewayError(f"top-ups of {iccid}: HTTP 422")
        items = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(items, list):
            raise GatewayError(f"top-ups of {iccid}: HTTP {status}")
        known = {p.id: p for p in await self._all_packages()}
        found = []
        for item in items:
            if isinstance(item, dict):
                package = _topup_package(item, known.get(str(item.get("id"))))
                if package is not None:
                    found.append(package)
        return sorted(found, key=EsimPackage.shelf_order)

    # --- the account ------------------------------------------------------------------

    async def balance(self) -> Money:
        status, body = await self._read("/balance")
        data = body.get("data") if isinstance(body, dict) else None
        balances = data.get("balances") if isinstance(data, dict) else None
        available = balances.get("availableBalance") if isinstance(balances, dict) else None
        if status != 200 or not isinstance(available, dict):
            raise GatewayError(f"balance: HTTP {status}")
        try:
            return Money.from_decimal(decimal_of(available.get("amount")),
                                      str(available.get("currency")))
        except MoneyError as exc:
            raise GatewayError(f"balance in {available.get('currency')!r}") from exc


# --- reading Airalo's objects -------------------------------------------------------------


def _checked(iccid: str) -> str:
    """An ICCID is digits; anything else never reaches a URL path."""
    if not iccid.isdigit() or not 18 <= len(iccid) <= 22:
        raise EsimNotFound(f"not an ICCID: {iccid!r}")
    return iccid


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        meta = body.get("meta")
        return str(body.get("reason") or (meta.get("message") if isinstance(meta, dict)
                                          else None) or body.get("message") or "")
    return ""


def _refusal(body: Any) -> EsimRefused | None:
    """The EsimRefused a 422 means, or None when it does not say the order was refused."""
    if not isinstance(body, dict):
        return None
    code = body.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        if code == _UNEXPECTED:
            return None
        reason = _REFUSALS.get(code)
        if reason is None:
            log.error("Airalo refusal code %s not known: %s", code, body.get("reason"))
            reason = DeclineReason.DECLINED
        return EsimRefused(reason, f"code {code}: {body.get('reason') or ''}".strip())
    fields = body.get("data")
    if isinstance(fields, dict) and fields:
        detail = "; ".join(f"{k}: {v}" for k, v in fields.items())
        if "package_id" in fields or "quantity" in fields:  # unknown, sold out, no stock
            return EsimRefused(DeclineReason.PRODUCT_UNAVAILABLE, detail)
        log.error("Airalo refused an order's fields: %s", detail)
        return EsimRefused(DeclineReason.DECLINED, detail)
    return None


def _usd(value: Any) -> Money:
    return Money.from_decimal(decimal_of(value), CURRENCY)


def _wire_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.strptime(text, WIRE_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _package(item: dict[str, Any], *, coverage: str, countries: tuple[str, ...],
             networks: tuple[str, ...], rechargeable: bool) -> EsimPackage:
    unlimited = bool(item.get("is_unlimited"))
    return EsimPackage(
        id=str(item["id"]), kind=PackageKind(str(item.get("type") or "sim")),
        title=str(item.get("title") or item["id"]), price=_usd(item["price"]),
        net_price=_usd(item["net_price"] if item.get("net_price") is not None
                       else item["price"]),
        data_mb=None if unlimited else int(item.get("amount") or 0),
        validity_days=int(item.get("day") or 0), coverage=coverage, countries=countries,
        networks=networks, rechargeable=rechargeable)


def _packages_of(entry: dict[str, Any]) -> list[EsimPackage]:
    """Every package of one country or region entry that works in Cambodia."""
    found = []
    coverage = str(entry.get("title") or entry.get("slug") or "")
    for operator in entry.get("operators") or []:
        if not isinstance(operator, dict):
            continue
        countries = tuple(str(c.get("country_code")) for c in operator.get("countries") or []
                          if isinstance(c, dict) and c.get("country_code"))
        if COUNTRY not in countries:
            continue
        networks = tuple(str(n.get("name")) for cover in operator.get("coverages") or []
                         if isinstance(cover, dict) and cover.get("code") == COUNTRY
                         for n in cover.get("networks") or [] if isinstance(n, dict))
        for item in operator.get("packages") or []:
            try:
                found.append(_package(item, coverage=coverage, countries=countries,
                                      networks=networks,
                                      rechargeable=bool(operator.get("rechargeability", True))))
            except (GatewayError, KeyError, TypeError, ValueError, MoneyError):
                log.warning("Airalo package %r not understood; left out",
                            item.get("id") if isinstance(item, dict) else item)
    return found


def _topup_package(item: dict[str, Any], known: EsimPackage | None) -> EsimPackage | None:
    """A package of GET /sims/{iccid}/topups, with what the catalog adds (coverage)."""
    try:
        return _package(item, coverage=known.coverage if known else "",
                        countries=known.countries if known else (COUNTRY,),
                        networks=known.networks if known else (), rechargeable=True)
    except (GatewayError, KeyError, TypeError, ValueError, MoneyError):
        log.warning("Airalo top-up package %r not understood; left out", item.get("id"))
        return None


def _install_code(sim: dict[str, Any]) -> InstallCode:
    smdp, matching = str(sim.get("lpa") or ""), str(sim.get("matching_id") or "")
    qrcode = str(sim.get("qrcode") or "")
    if not qrcode.startswith("LPA:1$") and smdp and matching:
        qrcode = InstallCode.lpa(smdp, matching)
    if not qrcode.startswith("LPA:1$") or not sim.get("iccid"):
        raise GatewayError(f"eSIM {sim.get('iccid')!r} without an install code")
    if not smdp or not matching:  # read them from the LPA string itself
        _, smdp, matching = [*qrcode.split("$"), "", ""][:3]
    return InstallCode(
        iccid=str(sim["iccid"]), activation_code=qrcode, smdp_address=smdp,
        matching_id=matching,
        apple_install_url=str(sim["direct_apple_installation_url"])
        if sim.get("direct_apple_installation_url") else None,
        confirmation_code=str(sim["confirmation_code"]) if sim.get("confirmation_code")
        else None)


def _order(data: dict[str, Any], reference: str, now: datetime) -> EsimOrder:
    """An order as POST /orders(/topups) or GET /orders gives it (amounts as numbers or
    as strings, validity as a number or a string)."""
    try:
        kind = PackageKind(str(data.get("type") or "sim"))
        sims = [sim for sim in data.get("sims") or [] if isinstance(sim, dict)]
        codes = tuple(_install_code(sim) for sim in sims) if kind is PackageKind.SIM else ()
        iccid = str(sims[0]["iccid"]) if len(sims) == 1 and sims[0].get("iccid") else None
        return EsimOrder(
            reference=reference, order_id=str(data["id"]), code=str(data.get("code") or ""),
            package_id=str(data["package_id"]), kind=kind, price=_usd(data["price"]),
            net_price=_usd(data["net_price"]) if data.get("net_price") is not None else None,
            at=_wire_time(data.get("created_at")) or now,
            validity_days=int(data.get("validity") or 0), sims=codes, iccid=iccid)
    except (KeyError, TypeError, ValueError, MoneyError) as exc:
        raise GatewayError(f"order of {reference} not understood: {exc}") from exc


def _usage(iccid: str, data: dict[str, Any], now: datetime) -> EsimUsage:
    status = _STATUS.get(str(data.get("status") or "UNKNOWN"), EsimStatus.UNKNOWN)
    unlimited = bool(data.get("is_unlimited"))

    def megabytes(name: str) -> int | None:
        value = data.get(name)
        if unlimited or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return max(int(value), 0)

    return EsimUsage(iccid=iccid, status=status, read_at=now,
                     remaining_mb=megabytes("remaining"), total_mb=megabytes("total"),
                     expires_at=_wire_time(data.get("expired_at")))
