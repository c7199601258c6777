"""`tokviz score FILE [FILE ...] --model NAME`: one row per token (or word) of every file, as CSV or JSONL.

Rows go to OUT (`-o`) or to stdout; progress and messages go to stderr. With `-o`, a second run skips the
files whose rows OUT already holds in full. See README, "Score a corpus".
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from ..core.errors import TokvizError
from . import output
from .job import Job, side
from .windows import check_stride

USAGE_ERROR, FAILED = 2, 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like `tokviz` itself
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tokviz score", description="Score every token of text files with a language model.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files")
    parser.add_argument("--model", required=True, metavar="NAME",
                        help="a catalog key, hub id or local folder (or a model of --server)")
    other = parser.add_mutually_exclusive_group()
    other.add_argument("--compare", metavar="NAME", help="score the files with a second model too")
    other.add_argument("--context-b", metavar="FILE", help="score the files a second time after this text")
    parser.add_argument("--context", metavar="FILE", help="a text every file is scored after (default: none)")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="default: csv for an OUT ending in .csv, "
                                                                     "else jsonl")
    parser.add_argument("--words", action="store_true", help="one row per whitespace-delimited word")
    parser.add_argument("--stride", type=int, metavar="N", help="tokens a sliding window moves on for texts "
                                                                "longer than the context (default: half a window)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write here (and resume); default: stdout")
    parser.add_argument("--server", action="append", default=[], metavar="URL",
                        help="an OpenAI-compatible server whose models NAME may be")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (local models)")
    return parser


def say(message: str) -> None:
    print(f"tokviz score: {message}", file=sys.stderr, flush=True)


def read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as stream:  # "\r\n" stays as written
            return stream.read()
    except FileNotFoundError:
        raise TokvizError(f"{what} {path} does not exist.") from None
    except UnicodeDecodeError:
        raise TokvizError(f"{what} {path} is not UTF-8 text.") from None
    except OSError as error:
        raise TokvizError(f"{what} {path} cannot be read ({error.strerror or error}).") from None


class Progress:
    """A bar on a terminal; elsewhere a line at most every 10 seconds."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started, self.said = total, 0, time.perf_counter(), time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="tok", unit_scale=True, file=sys.stderr, desc="tokviz score")

    def __call__(self, tokens: int) -> None:
        self.done += tokens
        if self.bar is not None:
            self.bar.update(tokens)
        elif time.perf_counter() - self.said > 10:
            self.said = time.perf_counter()
            say(f"{self.done:,} of {self.total:,} tokens ({self.rate():,.0f} tokens/s)")

    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.started, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def score_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (TokvizError, output.OutputError, ValueError) as error:
        say(str(error))
        return USAGE_ERROR
    except KeyboardInterrupt:
        say("interrupted; run the same command again to continue where it stopped." if args.output
            else "interrupted.")
        return 130


def run(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(args.files))  # a file named twice is scored once
    texts = {name: read_text(name, "The file") for name in names}
    context = read_text(args.context, "The context file") if args.context else None
    fmt = args.format or ("csv" if args.output and args.output.lower().endswith(".csv") else "jsonl")

    from ..engine import ModelManager

    manager = ModelManager(device=args.device, servers=args.server)
    model = load(manager, args.model, "--model")
    a = side(model, context, texts)
    if args.compare:
        b = side(load(manager, args.compare, "--compare"), context, texts)
    elif args.context_b:
        b = side(model, read_text(args.context_b, "The context file"), texts)
    else:
        b = None
    job = Job(a, b, args.words, args.stride)
    for s in job.sides:  # a bad stride is refused before anything is scored
        if s.model.context_length is not None:
            check_stride(args.stride, s.model.context_length - len(s.prefix), bool(s.prefix))
    columns = job.columns()

    todo, failed = [], 0
    for name in names:
        problem = job.mismatch(name)
        if problem:
            say(f"{name}: {problem}; it is left out.")
            failed += 1
        else:
            todo.append(name)
        if texts[name] != a.decoded[name]:
            say(f"{name}: the tokenizer of {model.label} does not give back this text exactly (it changes some "
                "characters); offsets and texts refer to the text it gives back.")
    out = Path(args.output) if args.output else None
    if out is not None and out.exists():
        found = output.read_rows(out, columns, fmt)
        done = output.done_files(found, {n: job.expected_end(n) for n in names})
        output.keep_only(out, found, done, columns, fmt)
        if done & set(todo):
            say(f"{len(done & set(todo))} of {len(todo)} files are already complete in {out}: skipped.")
        todo = [n for n in todo if n not in done]

    progress = Progress(job.tokens(todo))
    writer = output.Writer(out, columns, fmt, sys.stdout)
    try:
        for group in job.groups(todo):
            for name, found in job.score_group(group, progress).items():
                writer.write(found)
    finally:
        writer.close()
        progress.close()
    if todo:
        say(f"scored {len(todo)} file{'s' if len(todo) != 1 else ''}: {progress.done:,} tokens in "
            f"{time.perf_counter() - progress.started:.1f} s ({progress.rate():,.0f} tokens/s).")
    return FAILED if failed else 0


def load(manager, name: str, flag: str):
    """The model, with its loading messages on stderr (each once: byte counts do not repeat a message)."""
    seen: set[str] = set()

    def report(fraction: float | None, message: str) -> None:
        key = re.sub(r"[\d.,]+", "#", message)
        if key not in seen:
            seen.add(key)
            say(message)

    try:
        return manager.load(name, progress=report)
    except TokvizError as error:
        raise TokvizError(f"{flag} {name}: {error}") from None
