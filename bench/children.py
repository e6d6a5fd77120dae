"""What the benchmarks share: each run is a child process (``--child <job as JSON>``) that
prints one ``RESULT <json>`` line, so runs do not share an interpreter, a GIL or a heap."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

Result = dict[str, Any]


def child_main(spec: str, job_type: Callable[..., Any],
               run: Callable[[Any], Coroutine[Any, Any, Result]]) -> None:
    """In the child: the job from its JSON, run, and its result printed for the parent."""
    job = job_type(**json.loads(spec))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(run(job))
    print("RESULT " + json.dumps(result), flush=True)


def run_child(module: str, job: Any, timeout_s: float,
              failed: Callable[[str], Result]) -> Result:
    """In the parent: ``python -m <module> --child <job>``, and the result it printed; the
    result ``failed(why)`` builds when it printed none (its last lines of output say why)."""
    completed = subprocess.run(
        [sys.executable, "-m", module, "--child", json.dumps(dataclasses.asdict(job))],
        capture_output=True, text=True, timeout=timeout_s, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            result: Result = json.loads(line[len("RESULT "):])
            return result
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
    return failed(f"child exited {completed.returncode}: " + " | ".join(tail))


def close_child(process: subprocess.Popen[str]) -> None:
    """Ends a helper process that reads commands on stdin: its input closed (it exits),
    killed if it has not within 15 s, its output closed."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def parse_or_serve(parser: argparse.ArgumentParser, argv: list[str] | None, *,
                   child: Callable[[str], None],
                   fake: Callable[[str], None]) -> argparse.Namespace | None:
    """The benchmark's arguments; or, started as one of its own processes (``--child`` a
    run, ``--fake`` a fake server), that process served and None."""
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fake", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return None
    if args.fake:
        fake(args.fake)
        return None
    return args
