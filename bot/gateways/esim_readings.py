"""eSIM lines read from the eSIM provider: unlike a physical prepaid line, its data left and
its expiry are known. A reading's source is PROVIDER; an eSIM not installed yet has no
expiry (its validity starts when it is installed)."""

from __future__ import annotations

from bot.domain.readings import LineReading, ReadingSource
from bot.gateways.esim import EsimProvider


class EsimLineReadings:
    def __init__(self, provider: EsimProvider, name: str) -> None:
        self._provider = provider
        self.name = name  # how readings name their source: "read from Airalo"

    async def read(self, iccid: str) -> LineReading:
        """Raises EsimNotFound, RateLimited or GatewayError as the provider does. The
        provider spaces these calls under its rate limit, so one may wait for its turn."""
        usage = await self._provider.usage(iccid)
        return LineReading(source=ReadingSource.PROVIDER, read_at=usage.read_at,
                           data_mb=usage.remaining_mb, validity_end=usage.expires_at)
