"""Container health check: exit 0 when the service answers ``GET /api/v1/health`` with 200, else 1.

Standard library only (the slim image has no curl). ``ACMIL_HEALTH_URL`` overrides the URL; when the
service requires an API key, put it in ``ACMIL_API_KEY`` (sent as ``X-API-Key``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/api/v1/health"


def main() -> int:
    url = os.environ.get("ACMIL_HEALTH_URL", DEFAULT_URL)
    headers = {"X-API-Key": os.environ["ACMIL_API_KEY"]} if os.environ.get("ACMIL_API_KEY") else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as err:
        print(f"unhealthy: {url}: {err}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url}: HTTP {response.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
