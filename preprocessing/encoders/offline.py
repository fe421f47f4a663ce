"""Is the model hub reachable? Decided once, in at most a couple of seconds, before anything waits on it.

``HF_HUB_OFFLINE`` (or ``ACMIL_OFFLINE``) set: offline, no probe. Otherwise one TCP connection to the hub's
host (``HF_ENDPOINT``'s, else huggingface.co:443) with a short timeout; a name that does not resolve fails at
once. huggingface_hub's own retries (about a minute when there is no network) are never reached.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 2.0
_TRUE = {"1", "true", "yes", "on"}
_decided: list[str] = []  # the reason found by the first failed probe (go_offline), reported from then on


def hub_address() -> tuple[str, int]:
    """(host, port) of the hub: HF_ENDPOINT's, else huggingface.co:443."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def offline_reason() -> str | None:
    """Why the hub cannot be used ("HF_HUB_OFFLINE=1", "no connection to huggingface.co: ..."), or None."""
    if _decided:
        return _decided[0]
    for var in ("HF_HUB_OFFLINE", "ACMIL_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var]}"
    return _probe(*hub_address())


@lru_cache(maxsize=4)
def _probe(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"no connection to {host}:{port} ({err.strerror or type(err).__name__})"


def go_offline(reason: str) -> None:
    """Tell huggingface_hub (and timm through it) not to try the network in this process (after a failed probe).

    Its module constant, not ``os.environ``: the decision is this process's, not one for every child or
    library that reads the environment later.
    """
    _decided[:] = [reason]
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass
