"""The command-line scaffolding every stage shares: `python -m pipeline.<stage> <command> ...`, with
one subcommand per rule action, the same logging format, the shard-range option and the closing
timing line written once here."""

from __future__ import annotations

import argparse
import logging
import time

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps a module docstring's layout and shows each option's default."""


def stage_parser(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser of a stage's command line and its (required) subcommands."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    return parser, parser.add_subparsers(dest="command", required=True)


def add_indices(p: argparse.ArgumentParser, what: str = "rows") -> None:
    """--indices START STOP: the half-open range of a shard."""
    p.add_argument("--indices", type=int, nargs=2, required=True, metavar=("START", "STOP"),
                   help=f"{what} START..STOP-1")


def add_index_command(sub, help: str) -> argparse.ArgumentParser:
    """`index OUT SHARD...`: the index (and manifest) of a dataset's shards."""
    p = sub.add_parser("index", help=help)
    p.add_argument("out")
    p.add_argument("shards", nargs="+")
    return p


def add_check_command(sub, help: str) -> argparse.ArgumentParser:
    """`check OUT INDEX_JSON:GT_NPZ...`: a stage's labels against the demo world's ground truth."""
    p = sub.add_parser("check", help=help)
    p.add_argument("out")
    p.add_argument("pairs", nargs="+", help="INDEX_JSON:GT_NPZ")
    return p


def start_logging() -> float:
    """Log to stderr in the project's format (rules send it to logs/<rule>/); returns the start time."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return time.perf_counter()


def log_done(log: logging.Logger, start: float) -> None:
    log.info("done in %.1f s", time.perf_counter() - start)
