"""``python -m geyser.store copy FROM_URL TO_URL``: move job documents between stores.

Copies every job document (not the maintenance leases, not queue entries) from one store to
another, e.g. from the embedded SQLite file to PostgreSQL, page by page in uuid order. The
copy itself is Rust (``geyser._core.copy_store``, see docs/stores.md, "Moving data between
stores"); this module is its command line: it prints progress after each page and every
document it did not copy, and exits non-zero when something was left behind.
Touches the two stores only through ``geyser._core.copy_store``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from geyser import _core
from geyser.errors import ConfigError

__all__ = ["DEFAULT_PAGE_SIZE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_PROBLEMS", "build_parser", "copy_command", "main"]

#: Documents read from the source per page unless ``--page-size`` says otherwise.
DEFAULT_PAGE_SIZE = 500
#: Exit status when some documents were not copied (conflicting, unreadable or refused).
EXIT_PROBLEMS = 1
#: Exit status when a store could not be opened or failed during the copy.
EXIT_FAILED = 3
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130


DESCRIPTION = """\
Copy every job document from the store at FROM_URL to the store at TO_URL, keeping each
document exactly (version and timestamps included). Store URLs are those of GEYSER_STORE_URL:
sqlite:// (the embedded default file), sqlite:///path.db, postgresql://..., redis://...

Idempotent: a document already in the target unchanged is skipped, one the target holds at a
lower version is replaced, and one the target holds differently at the same or a higher
version is a conflict, reported and left alone unless --overwrite. Unreadable source
documents are reported by uuid and skipped. Progress after each page names the last uuid
done; --after that uuid carries on from there (running again from the start also works, it
skips what is there). Exit status: 0 everything copied or already there, 1 some documents
not copied, 2 bad arguments, 3 a store failed (the resume point is printed), 130 Ctrl-C.
"""

EPILOG = """\
example:
  python -m geyser.store copy sqlite:// 'postgresql://geyser@db.internal:5432/jobs?schema=geyser'
  python -m geyser.store copy sqlite:///var/lib/app/geyser.db redis://10.0.0.5:6379/2 --after 5f0c...
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults on every option, and the description and example as written."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m geyser.store``."""
    p = argparse.ArgumentParser(prog="python -m geyser.store", description="Geyser store tools.")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = commands.add_parser("copy", help="copy every job document from one store to another",
                            description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter)
    c.add_argument("from_url", metavar="FROM_URL", help="the store to read")
    c.add_argument("to_url", metavar="TO_URL", help="the store to write")
    c.add_argument("--after", default=None, metavar="UUID",
                   help="start after this uuid (the resume point an earlier copy printed); None: from the first")
    c.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, metavar="N",
                   help="documents read from the source per page")
    c.add_argument("--overwrite", action="store_true",
                   help="replace a different document the target holds at the same or a higher version")
    c.add_argument("--quiet", action="store_true", help="print no progress lines, only problems and the summary")
    return p


def _counts(r: dict[str, Any]) -> str:
    return (f"read {r['read']}, copied {r['copied']}, skipped {r['skipped']}, conflicting {r['conflicting']}, "
            f"unreadable {r['unreadable']}, refused {r['refused']}")


class _Printer:
    """The copy's callback: prints each page's progress (unless quiet) and each document not
    copied, and remembers the last resume point a page reported."""

    def __init__(self, quiet: bool, after: str | None) -> None:
        self.quiet = quiet
        self.last_uuid = after

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "page":
            self.last_uuid = event["last_uuid"]
            if not self.quiet:
                print(f"{_counts(event)}; {event['rate']:.0f} documents/s; done up to {event['last_uuid']}",
                      flush=True)
        else:
            print(f"{event['kind']} {event['uuid']}: {event['reason']}", flush=True)


def copy_command(args: argparse.Namespace) -> int:
    """Run ``copy`` as parsed; returns the exit status."""
    source, target = _core.redact_url(args.from_url), _core.redact_url(args.to_url)
    after = f", after {args.after}" if args.after else ""
    print(f"copying job documents from {source} to {target}, {args.page_size} per page{after}", flush=True)
    printer = _Printer(args.quiet, args.after)
    try:
        result = _core.copy_store(args.from_url, args.to_url, printer, after=args.after,
                                  page_size=args.page_size, overwrite=args.overwrite)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        where = f"--after {printer.last_uuid}" if printer.last_uuid else "from the start"
        print(f"interrupted; to carry on: {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = f"{_counts(result)} in {result['elapsed']:.1f} s ({result['rate']:.0f} documents/s)"
    if result["error"] is not None:
        where = f"--after {result['last_uuid']}" if result["last_uuid"] else "from the start"
        print(f"stopped: {result['error']}\n{summary}\nto carry on: {where}", file=sys.stderr)
        return EXIT_FAILED
    print(f"done: {summary}; last uuid {result['last_uuid']}")
    problems = result["conflicting"] + result["unreadable"] + result["refused"]
    return EXIT_PROBLEMS if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.store``; returns the exit status."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.page_size < 1:
        p.error("--page-size must be at least 1")
    return copy_command(args)


if __name__ == "__main__":
    sys.exit(main())
