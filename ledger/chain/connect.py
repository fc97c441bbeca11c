"""Connecting to a chain through its JSON-RPC endpoint (anvil, geth, an L2); see `inprocess` for py-evm.

`connect` fails fast (the endpoint must answer within a few seconds), then the connection rides
out outages: every request, reads and `eth_sendRawTransaction` alike, is retried with backoff
while the endpoint is unreachable, for up to the process's patience. Resending a signed
transaction is safe: the same bytes are the same transaction (see `client._send`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import requests
from web3 import HTTPProvider, Web3
from web3._utils.http_session_manager import HTTPSessionManager
from web3.types import RPCEndpoint

from ledger.config import DEFAULT_RPC_URL
from ledger.core.errors import Unavailable
from ledger.core.polling import WaitTimeout, poll_until
from ledger.core.retry import DEFAULT_PATIENCE_SECONDS, Backoff, retry_patiently

log = logging.getLogger(__name__)

# What "the endpoint is not there" looks like through requests; HTTP errors from a proxy in front
# of a restarting node too. JSON-RPC error replies are answers, never retried.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (requests.ConnectionError, requests.Timeout, requests.HTTPError)


class ChainUnavailable(Unavailable):
    """No chain answered at the given endpoint."""


class _Sessions(HTTPSessionManager):
    """web3's per-thread `requests` sessions, each reading the environment's proxy settings for the
    endpoint once, when made: requests otherwise scans the whole environment twice per request
    (~0.5 ms of a ~2 ms JSON-RPC call, paid on every wake of every waiting process)."""

    def cache_and_return_session(self, endpoint_uri: Any, session: Any = None, request_timeout: float | None = None) -> requests.Session:
        made = super().cache_and_return_session(endpoint_uri, session, request_timeout)
        if made.trust_env:
            made.proxies.update(requests.utils.get_environ_proxies(str(endpoint_uri)))
            made.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            made.trust_env = False
        return made


class PatientHTTPProvider(HTTPProvider):
    """web3's HTTP provider, retrying every request on transport failures for up to `patience` seconds."""

    def __init__(self, endpoint_uri: str, *, patience: float, **kwargs: Any) -> None:
        super().__init__(endpoint_uri, exception_retry_configuration=None, **kwargs)
        self._request_session_manager = _Sessions()
        self.backoff = Backoff(patience=patience)

    def make_batch_request(self, batch_requests: list[tuple[RPCEndpoint, Any]]) -> Any:
        """Several requests in one round trip, retried like one (web3's own batch is not)."""
        raw = self._make_request(RPCEndpoint("batch"), self.encode_batch_rpc_request(batch_requests))
        response = self.decode_rpc_response(raw)
        if not isinstance(response, list):  # an error about the batch as a whole
            return response
        return sorted(response, key=lambda answer: int(answer.get("id") or 0))

    def _make_request(self, method: RPCEndpoint, request_data: bytes) -> bytes:
        return retry_patiently(
            lambda: super(PatientHTTPProvider, self)._make_request(method, request_data),
            retry_on=_TRANSPORT_ERRORS,
            what=f"the chain at {self.endpoint_uri}",
            backoff=self.backoff,
            log=log,
            unavailable=ChainUnavailable,
        )


def connect(rpc_url: str = DEFAULT_RPC_URL, *, timeout: float = 5.0, patience: float = DEFAULT_PATIENCE_SECONDS) -> Web3:
    """An HTTP connection that has answered eth_chainId (polled up to `timeout`), patient afterwards."""
    # web3 asks eth_chainId before every call and transaction (2-3 times per transaction); an
    # endpoint's chain id does not change, so the provider answers those from its cache.
    provider = PatientHTTPProvider(
        rpc_url,
        patience=patience,
        request_kwargs={"timeout": 30},
        cache_allowed_requests=True,
        cacheable_requests={"eth_chainId"},
    )
    w3 = Web3(provider)
    last_error: list[Exception] = []

    def answers() -> Web3 | None:
        try:
            w3.provider.make_request(RPCEndpoint("eth_chainId"), [])
            return w3
        except Exception as exc:  # connection refused, DNS, HTTP errors: all mean "not there yet"
            last_error[:] = [exc]
            return None

    provider.backoff = Backoff(patience=0)  # the first contact fails fast; patience starts once it answered
    try:
        poll_until(answers, timeout=timeout, what=f"a chain at {rpc_url}")
    except WaitTimeout:
        cause = last_error[0]
        raise ChainUnavailable(
            f"no chain answers at {rpc_url} ({type(cause).__name__}); start one with `fedledger devnet start`"
        ) from cause
    finally:
        provider.backoff = Backoff(patience=patience)
    return w3
