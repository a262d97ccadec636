"""The IdP's signing keys, cached by ``kid``.

Keys are fetched with the shared aiohttp session (never PyJWT's blocking ``PyJWKClient``) and kept in a
``cachetools.TTLCache``. A token with a ``kid`` we do not know triggers one refetch, which covers the IdP's key
rotation; refetches are rate-limited so that a flood of tokens with made-up ``kid``s cannot turn into a flood of
requests to the IdP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import jwt
from cachetools import TTLCache

from .. import metrics
from ..errors import IdpUnavailable, InvalidToken

log = logging.getLogger("gateway.jwks")

KEYS_TTL = 3600  # refresh the key set hourly, as mod_auth_openidc does
MIN_REFETCH_INTERVAL = 30  # SECURITY: at most one refetch per 30 s, whatever kids the tokens carry
MAX_KEYS = 64


class JwksCache:
    def __init__(
        self, http: aiohttp.ClientSession, jwks_uri: str, *, timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._http = http
        self._uri = jwks_uri
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._keys: TTLCache[str, jwt.PyJWK] = TTLCache(maxsize=MAX_KEYS, ttl=KEYS_TTL, timer=clock)
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return len(self._keys) > 0

    async def get(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and self._clock() - self._last_fetch >= MIN_REFETCH_INTERVAL:
                await self.refresh()
                key = self._keys.get(kid)
        if key is None:
            raise InvalidToken(f"no key with kid {kid[:64]!r} in the IdP's JWKS")
        return key

    @metrics.counts_jwks_fetches
    async def refresh(self) -> None:
        """Fetch the key set now; raises IdpUnavailable when the IdP does not give a usable one."""
        self._last_fetch = self._clock()
        try:
            async with self._http.get(self._uri, timeout=self._timeout, allow_redirects=False) as response:
                if response.status != 200:
                    raise IdpUnavailable(f"JWKS answered {response.status}")
                document = await response.json(content_type=None)
            key_set = jwt.PyJWKSet.from_dict(document)
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            log.warning("cannot load the JWKS from %s: %s", self._uri, exc.__class__.__name__)
            raise IdpUnavailable() from exc
        for key in key_set.keys:
            if key.key_id:
                self._keys[key.key_id] = key
        log.info("loaded %d signing keys from %s", len(key_set.keys), self._uri)
