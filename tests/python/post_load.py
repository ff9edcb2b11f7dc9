"""Load generator the web tests run in a separate process, so it never competes with
the server's event loop: POST one JSON body N times with C concurrent connections.

    python post_load.py URL BODY N C   → prints the status code counts as JSON
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys

from tornado.httpclient import AsyncHTTPClient


async def load(url: str, body: str, n: int, concurrency: int) -> dict[int, int]:
    """POST ``body`` to ``url`` ``n`` times, ``concurrency`` at a time; count the status codes."""
    AsyncHTTPClient.configure(None, max_clients=concurrency)
    http = AsyncHTTPClient()
    codes: collections.Counter[int] = collections.Counter()
    left = iter(range(n))

    async def one_connection() -> None:
        for _ in left:
            response = await http.fetch(url, method="POST", body=body, raise_error=False, request_timeout=60)
            codes[response.code] += 1

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return dict(codes)


if __name__ == "__main__":
    url, body, n, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(load(url, body, n, concurrency))))
