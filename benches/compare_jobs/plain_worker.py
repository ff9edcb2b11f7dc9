"""The plain-Python seed worker `compare.py` runs (`plain_drain.serve` until killed), whose job is
`record(doc["sent"])`. Touches only the tube, schema, prefix or file it is given.

    python -m compare_jobs.plain_worker KIND WHERE NAMESPACE BEANSTALKD_PORT TUBE
"""

from __future__ import annotations

import sys
import time

import greenstalk

from compare_jobs import record
from plain_drain import serve
from plain_stores import open_plain


def run_record(doc: dict) -> float:
    record(doc["sent"])
    return time.time()


def main(kind: str, where: str, namespace: str, port: str, tube: str) -> int:
    store = open_plain(kind, where, namespace)
    with greenstalk.Client(("127.0.0.1", int(port)), use=tube, watch=tube) as queue:
        return serve(store, queue, run_record, None)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
