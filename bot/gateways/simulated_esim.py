"""The simulated eSIM provider: the embedded default EsimProvider (ESIM_BACKEND=simulated).

It behaves as Airalo does where it matters to the bot: orders are not idempotent (a second
order under one reference makes a second eSIM) and are found again by their reference;
an eSIM is not installed until its user installs it (here: ``install_after`` its purchase,
or ``install()``), then spends data day by day and expires after its validity; a top-up
adds data and days. Its state lives in the bot's database (as a provider keeps its own), so
it commits its own transactions and survives a restart. Faults on demand: ``knobs``.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.domain.charges import DeclineReason
from bot.domain.invariants import present
from bot.domain.money import Money
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
from bot.gateways.topup import GatewayTimeout
from storage.crypto import FieldCipher
from storage.db import Database
from storage.sim_esim import SimEsimOrderRow, SimEsimRepository, SimEsimRow

SMDP_ADDRESS = "smdp.simulated.invalid"
ICCID_PREFIX = "8985501"  # 89 (telecom) + 855 (Cambodia) + an issuer
START_CREDIT = Money(1_000_000, "USD")
ASIA = ("KH", "TH", "VN", "LA", "MY", "SG", "ID", "PH")


def _package(package_id: str, kind: PackageKind, cents: int, net: int, mb: int | None,
             days: int, *, asia: bool = False, rechargeable: bool = True) -> EsimPackage:
    data = "Unlimited" if mb is None else f"{mb // 1024} GB"
    return EsimPackage(
        id=package_id, kind=kind, title=f"{data} - {days} Days", price=Money(cents, "USD"),
        net_price=Money(net, "USD"), data_mb=mb, validity_days=days,
        coverage="Asia" if asia else "Cambodia", countries=ASIA if asia else ("KH",),
        networks=("Metfone",) if asia else ("Smart", "Cellcard"), rechargeable=rechargeable)


SIM, TOPUP = PackageKind.SIM, PackageKind.TOPUP
PACKAGES: tuple[EsimPackage, ...] = (
    _package("kh-7d-1gb", SIM, 500, 250, 1024, 7),
    _package("kh-15d-3gb", SIM, 900, 480, 3072, 15),
    _package("kh-30d-5gb", SIM, 1300, 720, 5120, 30),
    _package("kh-30d-10gb", SIM, 2000, 1200, 10240, 30),
    _package("kh-10d-unlimited", SIM, 2700, 1850, None, 10, rechargeable=False),
    _package("asia-7d-1gb", SIM, 500, 170, 1024, 7, asia=True),
    _package("asia-30d-5gb", SIM, 2000, 750, 5120, 30, asia=True),
    _package("kh-7d-1gb-topup", TOPUP, 500, 250, 1024, 7),
    _package("kh-15d-3gb-topup", TOPUP, 900, 480, 3072, 15),
    _package("kh-30d-5gb-topup", TOPUP, 1300, 720, 5120, 30),
    _package("asia-7d-1gb-topup", TOPUP, 500, 170, 1024, 7, asia=True),
)
BY_ID = {p.id: p for p in PACKAGES}


@dataclass(frozen=True)
class EsimKnobs:
    lost_response_rate: float = 0.0  # the order is made, its answer lost: outcome unknown
    out_of_stock: frozenset[str] = frozenset()  # package ids refused as sold out


def _luhn(payload: str) -> str:
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return str((10 - total % 10) % 10)


def _daily_mb(iccid: str, package: EsimPackage) -> int:
    """How fast this eSIM's user spends data: half to all of the package over its days."""
    if package.data_mb is None:
        return 0
    share = 50 + int(hashlib.sha256(iccid.encode()).hexdigest()[:4], 16) % 51  # 50..100 %
    return max(1, package.data_mb * share // 100 // max(package.validity_days, 1))


class SimulatedEsimProvider:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock, *,
                 install_after: timedelta = timedelta(minutes=30),
                 knobs: EsimKnobs | None = None, credit: Money = START_CREDIT,
                 rng: random.Random | None = None) -> None:
        self._db = db
        self._credit = credit  # what the partner account started with
        self._cipher = cipher
        self._clock = clock
        self.install_after = install_after
        self.knobs = knobs or EsimKnobs()
        self._rng = rng or random.Random()  # fault injection, not security

    # -- EsimProvider --------------------------------------------------------------------

    async def catalog(self) -> list[EsimPackage]:
        return sorted((p for p in PACKAGES if p.id not in self.knobs.out_of_stock),
                      key=EsimPackage.shelf_order)

    async def packages(self) -> list[EsimPackage]:
        return sorted((p for p in PACKAGES if p.kind is SIM
                       and p.id not in self.knobs.out_of_stock),
                      key=EsimPackage.shelf_order)

    async def order(self, package_id: str, reference: str) -> EsimOrder:
        package = BY_ID.get(package_id)
        if package is None or package.kind is not SIM or package_id in self.knobs.out_of_stock:
            raise EsimRefused(DeclineReason.PRODUCT_UNAVAILABLE, package_id)
        await self._refuse_without_credit(package)
        serial = "".join(str(secrets.randbelow(10)) for _ in range(11))
        iccid = ICCID_PREFIX + serial + _luhn(ICCID_PREFIX + serial)
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = SimEsimRepository(conn, self._cipher)
            order_id = await repo.add_order(
                description=reference, kind=SIM.value, package_id=package.id, iccid=iccid,
                price_minor=package.price.minor, net_minor=package.net_price.minor,
                currency=package.price.currency, now=now)
            await repo.add_esim(iccid=iccid, order_id=order_id, package_id=package.id,
                                matching_id=secrets.token_hex(10).upper(),
                                total_mb=package.data_mb, daily_mb=_daily_mb(iccid, package),
                                validity_days=package.validity_days, now=now)
            [row] = [o for o in await repo.orders_described(reference) if o.id == order_id]
            made = await self._order(repo, row)
        self._lose_answer()
        return made

    async def find_order(self, reference: str) -> EsimOrder | None:
        async with self._db.read() as conn:
            repo = SimEsimRepository(conn, self._cipher)
            rows = await repo.orders_described(reference)
            return await self._order(repo, rows[0]) if rows else None

    async def install_code(self, iccid: str) -> InstallCode:
        async with self._db.read() as conn:
            esim = await SimEsimRepository(conn, self._cipher).esim(iccid)
        if esim is None:
            raise EsimNotFound(f"no eSIM {iccid}")
        return _install_code(esim)

    async def usage(self, iccid: str) -> EsimUsage:
        now = self._clock.now()
        async with self._db.read() as conn:
            esim = await SimEsimRepository(conn, self._cipher).esim(iccid)
        if esim is None:
            raise EsimNotFound(f"no eSIM {iccid}")
        esim = self._as_of(esim, now)
        remaining = None if esim.total_mb is None else esim.total_mb - esim.used_mb
        if esim.installed_at is None:
            status = EsimStatus.NOT_INSTALLED
        elif esim.expires_at is not None and now >= esim.expires_at:
            status = EsimStatus.EXPIRED
        elif remaining is not None and remaining <= 0:
            status = EsimStatus.USED_UP
        else:
            status = EsimStatus.ACTIVE
        return EsimUsage(iccid=iccid, status=status, read_at=now, remaining_mb=remaining,
                         total_mb=esim.total_mb, expires_at=esim.expires_at)

    async def topup_packages(self, iccid: str) -> list[EsimPackage]:
        usage = await self.usage(iccid)
        async with self._db.read() as conn:
            esim = present(await SimEsimRepository(conn, self._cipher).esim(iccid),
                           f"eSIM {iccid}, just read, exists")
        bought = BY_ID[esim.package_id]
        if usage.status is EsimStatus.EXPIRED or not bought.rechargeable:
            return []
        return [p for p in PACKAGES if p.kind is TOPUP and p.coverage == bought.coverage
                and p.id not in self.knobs.out_of_stock]

    async def top_up(self, iccid: str, package_id: str, reference: str) -> EsimOrder:
        offered = {p.id: p for p in await self.topup_packages(iccid)}
        package = offered.get(package_id)
        if package is None:
            usage = await self.usage(iccid)
            raise EsimRefused(DeclineReason.DECLINED if usage.status is EsimStatus.EXPIRED
                              else DeclineReason.PRODUCT_UNAVAILABLE, package_id)
        await self._refuse_without_credit(package)
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = SimEsimRepository(conn, self._cipher)
            esim = present(await repo.esim(iccid, lock=True), f"eSIM {iccid} exists")
            current = self._as_of(esim, now)
            await repo.update_esim(
                iccid, used_mb=current.used_mb, as_of=now,
                installed_at=current.installed_at,
                total_mb=(current.total_mb or 0) + (package.data_mb or 0),
                validity_days=current.validity_days + package.validity_days,
                expires_at=(current.expires_at + timedelta(days=package.validity_days)
                            if current.expires_at is not None else None))
            order_id = await repo.add_order(
                description=reference, kind=TOPUP.value, package_id=package.id, iccid=iccid,
                price_minor=package.price.minor, net_minor=package.net_price.minor,
                currency=package.price.currency, now=now)
            [row] = [o for o in await repo.orders_described(reference) if o.id == order_id]
            made = await self._order(repo, row)
        self._lose_answer()
        return made

    async def balance(self) -> Money:
        async with self._db.read() as conn:
            spent = await SimEsimRepository(conn, self._cipher).spent_minor()
        return self._credit - Money(spent, self._credit.currency)

    async def orders_between(self, start: datetime, end: datetime) -> list[EsimOrder]:
        """Every order made in [start, end), as the provider's order list shows them."""
        async with self._db.read() as conn:
            repo = SimEsimRepository(conn, self._cipher)
            return [await self._order(repo, row)
                    for row in await repo.orders_between(start, end)]

    # -- controls for tests and demonstrations --------------------------------------------

    async def install(self, iccid: str) -> None:
        """The user installs the eSIM now (else it installs ``install_after`` its order)."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = SimEsimRepository(conn, self._cipher)
            esim = await repo.esim(iccid, lock=True)
            if esim is None or esim.installed_at is not None:
                raise ValueError(f"{iccid} cannot be installed")
            await repo.update_esim(iccid, installed_at=now, as_of=now,
                                   expires_at=now + timedelta(days=esim.validity_days))

    async def use_data(self, iccid: str, megabytes: int) -> None:
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = SimEsimRepository(conn, self._cipher)
            esim = await repo.esim(iccid, lock=True)
            if esim is None or esim.total_mb is None:
                raise ValueError(f"{iccid} has no data to use")
            current = self._as_of(esim, now)
            await repo.update_esim(iccid, as_of=now, installed_at=current.installed_at,
                                   expires_at=current.expires_at,
                                   used_mb=min(esim.total_mb, current.used_mb + megabytes))

    # -- the rest ------------------------------------------------------------------------

    def _as_of(self, esim: SimEsimRow, now: datetime) -> SimEsimRow:
        """The eSIM as it is at ``now``: installed once its time came, data spent since."""
        installed_at = esim.installed_at
        if installed_at is None and now >= esim.created_at + self.install_after:
            installed_at = esim.created_at + self.install_after
        if installed_at is None:
            return esim
        expires_at = esim.expires_at or installed_at + timedelta(days=esim.validity_days)
        spending_from = max(esim.as_of, installed_at)
        spending_until = min(now, expires_at)
        used = esim.used_mb
        if esim.total_mb is not None and spending_until > spending_from:
            days = (spending_until - spending_from) / timedelta(days=1)
            used = min(esim.total_mb, used + int(esim.daily_mb * days))
        return replace(esim, installed_at=installed_at, expires_at=expires_at, used_mb=used)

    async def _refuse_without_credit(self, package: EsimPackage) -> None:
        if await self.balance() < package.net_price:
            raise EsimRefused(DeclineReason.PROVIDER_BALANCE, package.id)

    def _lose_answer(self) -> None:
        if self.knobs.lost_response_rate and self._rng.random() < self.knobs.lost_response_rate:
            raise GatewayTimeout("simulated timeout after the order was made")

    async def _order(self, repo: SimEsimRepository, row: SimEsimOrderRow) -> EsimOrder:
        kind = PackageKind(row.kind)
        codes: tuple[InstallCode, ...] = ()
        if kind is SIM:
            esim = present(await repo.esim(row.iccid), f"the eSIM of order {row.id} exists")
            codes = (_install_code(esim),)
        return EsimOrder(
            reference=row.description or "", order_id=str(row.id), code=f"SIM-{row.id:08d}",
            package_id=row.package_id, kind=kind, price=Money(row.price_minor, row.currency),
            net_price=Money(row.net_minor, row.currency), at=row.created_at,
            validity_days=BY_ID[row.package_id].validity_days, sims=codes, iccid=row.iccid)


def _install_code(esim: SimEsimRow) -> InstallCode:
    return InstallCode(iccid=esim.iccid, smdp_address=SMDP_ADDRESS,
                       matching_id=esim.matching_id,
                       activation_code=InstallCode.lpa(SMDP_ADDRESS, esim.matching_id))
