"""``python -m stream.trainer.job``: one feedback cycle in a process of its own.

Started by the trainer worker (``stream.trainer.loop``); reads the same ``RISKSTREAM_*``
settings from its environment and writes a :class:`~stream.trainer.report.CycleReport` as
JSON to ``--result``. A separate process because training holds hundreds of MB and both
cores for minutes: the worker keeps consuming labels meanwhile, gets all that memory back
when the cycle ends, and can stop a cycle at any moment by terminating it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from stream.logs import configure_logging
from stream.settings import load_settings

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.trainer.job", description=__doc__)
    parser.add_argument("--mode", choices=("finetune", "review"), required=True)
    parser.add_argument("--challenger", help="review: the shadow version to judge again")
    parser.add_argument("--result", type=Path, required=True, help="where to write the report")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log)

    from stream.trainer.finetune import run_finetune, run_review

    if args.mode == "review":
        if not args.challenger:
            parser.error("--mode review needs --challenger")
        report = run_review(settings, args.challenger)
    else:
        report = run_finetune(settings, progress=sys.stderr.isatty())
    temporary = args.result.with_suffix(".tmp")
    temporary.write_text(report.model_dump_json())
    os.replace(temporary, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
