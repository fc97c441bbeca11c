"""Connecting to a chain through its JSON-RPC endpoint (anvil, geth, an L2); see `inprocess` for py-evm."""

from __future__ import annotations

from web3 import Web3

from ledger.config import DEFAULT_RPC_URL
from ledger.core.errors import LedgerError
from ledger.core.polling import WaitTimeout, poll_until


class ChainUnavailable(LedgerError):
    """No chain answered at the given endpoint."""


def connect(rpc_url: str = DEFAULT_RPC_URL, *, timeout: float = 5.0) -> Web3:
    """An HTTP connection that has answered eth_chainId at least once (polled up to `timeout`)."""
    # web3 asks eth_chainId before every call and transaction (2-3 times per transaction); an
    # endpoint's chain id does not change, so the provider answers those from its cache.
    provider = Web3.HTTPProvider(
        rpc_url, request_kwargs={"timeout": 30}, cache_allowed_requests=True, cacheable_requests={"eth_chainId"}
    )
    w3 = Web3(provider)
    last_error: list[Exception] = []

    def answers() -> Web3 | None:
        try:
            w3.eth.chain_id
            return w3
        except Exception as exc:  # connection refused, DNS, HTTP errors: all mean "not there yet"
            last_error[:] = [exc]
            return None

    try:
        return poll_until(answers, timeout=timeout, what=f"a chain at {rpc_url}")
    except WaitTimeout:
        cause = last_error[0]
        raise ChainUnavailable(
            f"no chain answers at {rpc_url} ({type(cause).__name__}); start one with `fedledger devnet start`"
        ) from cause
