"""What the CLI prints with: one-line errors and warnings, progress bars with an ETA."""

from __future__ import annotations

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


def progress_bar(description: str) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def progress_callback(progress: Progress) -> Callable[[int, int], None]:
    """A (done, total) callback whose task (and clock) starts at the first batch, not at model load."""
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task("", total=total)
        progress.update(task, completed=done, total=total)

    return update


def print_table(title: str, columns: list[str], rows: list[list[str]], first_left: bool = True) -> None:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 or not first_left else "right")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)
