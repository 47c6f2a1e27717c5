"""`bench data list` and `bench data fetch NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from benchsuite.cli._common import DataDirOption, console

app = typer.Typer(help="List the registered datasets and fetch their files.", no_args_is_help=True)


def _size(path: str) -> str:
    from benchsuite.data.download import disk_size

    p = Path(path)
    if not (p.is_absolute() and p.exists()):
        return "-"  # built in or generated
    size = disk_size(p)
    if size < 1024:
        return f"{size} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            break
    return f"{size:.1f} {unit}"


def _missing_hint(name: str, info, root: Path) -> str:
    """The loader's own error for absent files: it names what to place where, or how to fetch it."""
    from benchsuite.errors import BenchError

    try:
        info.loader(root)
    except BenchError as e:
        return str(e).removeprefix(f"{name}: ")
    return "locate() found no files"


@app.command("list")
def list_datasets_cmd(data_dir: DataDirOption = None) -> None:
    """Each dataset, where its files are (or what to do to get them), and their size on disk."""
    from benchsuite.data.registry import data_dir as resolve
    from benchsuite.data.registry import dataset_info, list_datasets

    root = resolve(data_dir)
    table = Table(title=f"datasets (data dir: {root})")
    for column in ("name", "description", "location", "size"):
        table.add_column(column, overflow="fold")
    for name in list_datasets():
        info = dataset_info(name)
        where = info.locate(root)
        if where is None:
            table.add_row(name, info.description, f"[red]missing:[/red] {escape(_missing_hint(name, info, root))}", "-")
        else:
            table.add_row(name, info.description, escape(where), _size(where))
    console.print(table)


@app.command("fetch")
def fetch_cmd(name: Annotated[str, typer.Argument(help="A name from `bench data list`.")],
              data_dir: DataDirOption = None) -> None:
    """Download NAME's files into the data dir, verify their checksums and unpack them."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from benchsuite.data.download import fetcher
    from benchsuite.data.registry import data_dir as resolve
    from benchsuite.data.registry import dataset_info

    root = resolve(data_dir)
    hook = fetcher(name)
    if hook is None:
        console.print(f"{name}: nothing to download ({escape(str(dataset_info(name).locate(root)))})", soft_wrap=True)
        return
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"fetching {name}", total=None)
        where = hook(root, lambda done, total: progress.update(task, completed=done, total=total))
    console.print(f"{name}: ready in {escape(where)}", soft_wrap=True)  # unwrapped, so the path stays copyable
