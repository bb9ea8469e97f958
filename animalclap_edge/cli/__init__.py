"""`animalclap-edge`: the recorder's command line; `main` is its entry point."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator

from animalclap_edge.cli.parser import build_parser
from animalclap_edge.cli.run import cmd_run

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # only `run` logs; `inspect | head` has nothing in a database to speak of
    logged = "; everything logged so far is in the database" if args.func is cmd_run else ""
    try:
        with _stop_signals_interrupt():
            return args.func(args)
    except KeyboardInterrupt:
        print(f"interrupted{logged}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head`, or a consumer of --jsonl that went away
        # stdout is gone: point it at /dev/null so the interpreter's last flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"stopped: the program reading our output closed it{logged}", file=sys.stderr)
        return 141  # as a shell reports a process ended by SIGPIPE
    except _USER_ERRORS as e:
        print(f"animalclap-edge: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as e:
        if "full" not in str(e):
            raise
        print(
            f"animalclap-edge: error: the database's disk is full ({e}); everything committed "
            "before is kept: free space, or let retention make room (storage.max_disk_percent, "
            "retention_days)",
            file=sys.stderr,
        )
        return 2


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM (how systemd stops a service) and SIGINT both raise KeyboardInterrupt, so
    every command closes its sources, uplinks and database in the same `finally`
    blocks as on Ctrl-C. SIGINT is set too because a process started from a background
    shell inherits it ignored, and Python then installs no handler of its own."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, interrupt)
    except ValueError:  # not the main thread (an embedding application): leave them
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _user_errors() -> tuple[type[BaseException], ...]:
    from animalclap_edge.audio.decode import AudioError
    from animalclap_edge.backends.select import BackendError
    from animalclap_edge.bench import BenchError
    from animalclap_edge.bundle import BundleError
    from animalclap_edge.clips import ClipError
    from animalclap_edge.config import ConfigError
    from animalclap_edge.live import LiveError
    from animalclap_edge.publish import PublishError
    from animalclap_edge.report import ReportError
    from animalclap_edge.scoring import ScoringError
    from animalclap_edge.service import ServiceError
    from animalclap_edge.sources import SourceError
    from animalclap_edge.store import StoreError

    return (
        AudioError,
        BackendError,
        BenchError,
        BundleError,
        ClipError,
        ConfigError,
        LiveError,
        PublishError,
        ReportError,
        ScoringError,
        ServiceError,
        SourceError,
        StoreError,
    )


_USER_ERRORS: tuple[type[BaseException], ...] = _user_errors()


if __name__ == "__main__":
    sys.exit(main())
