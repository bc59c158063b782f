"""What the CLI prints with: one-line errors and warnings, progress bars with an ETA."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import UserError

console = Console(stderr=True, soft_wrap=True)  # one message, one line: greppable, never wrapped
stdout = Console(soft_wrap=True)


def say(message: str) -> None:
    console.print(message, highlight=False)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """UserError -> one line on stderr, exit code 2; Ctrl-C -> one line, exit 130; warnings -> one line each."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        warn(str(message))

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    except UserError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted:[/] finished forward passes are kept in the cache; run the same command again to resume", highlight=False)
        raise typer.Exit(130) from None
    finally:
        warnings.showwarning = previous


class Bar(Progress):
    """A rich bar in a terminal; without one (a log, CI), plain lines every PLAIN_EVERY_S seconds instead."""

    def __init__(self, description: str):
        super().__init__(
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.description = description


PLAIN_EVERY_S = 5.0


def progress_bar(description: str) -> Bar:
    return Bar(description)


def progress_callback(progress: Bar) -> Callable[[int, int], None]:
    """A (done, total) callback whose task (and clock) starts at the first batch, not at model load; the ETA
    counts only the work done since then (texts found in the store arrive all at once, at no cost)."""
    task = None
    started = printed = 0.0
    first = 0

    def update(done: int, total: int) -> None:
        nonlocal task, started, printed, first
        now = time.monotonic()
        if task is None:
            task, started, first = progress.add_task("", total=total), now, done
        progress.update(task, completed=done, total=total)
        if progress.disable and (now - printed >= PLAIN_EVERY_S or done == total):
            printed, elapsed = now, now - started
            eta = f", ETA {elapsed / (done - first) * (total - done):.0f} s" if first < done < total else ""
            say(f"{progress.description}: {done}/{total} texts, {elapsed:.0f} s{eta}")

    return update


def print_table(title: str, columns: list[str], rows: list[list[str]], first_left: bool = True) -> None:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 or not first_left else "right")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)
