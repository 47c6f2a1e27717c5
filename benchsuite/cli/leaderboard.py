"""`bench leaderboard build|serve|publish`: the static leaderboard site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchsuite.cli._common import DbOption, console

app = typer.Typer(no_args_is_help=True)

OutOption = Annotated[Path, typer.Option("--out", help="folder the site is written to")]


def _report(report) -> None:
    from rich.markup import escape

    pages = f"{report.pages} page" + "s" * (report.pages != 1)
    console.print(f"{escape(str(report.out))}: {pages}, {report.drawn} figures drawn, "
                  f"{report.kept} unchanged, {report.removed} stale files removed", soft_wrap=True)


@app.command("build")
def build(db: DbOption = None, out: OutOption = Path("_site")) -> None:
    """Render the site from the results database (incremental: unchanged figures are not redrawn)."""
    from benchsuite.site import build_site

    _report(build_site(db, out))


@app.command("serve")
def serve(
    db: DbOption = None,
    out: OutOption = Path("_site"),
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    rebuild: Annotated[bool, typer.Option("--build/--no-build", help="build before serving")] = True,
) -> None:
    """Preview the site on a local web server (builds it first)."""
    import functools
    import http.server

    from rich.markup import escape

    from benchsuite.errors import BenchError
    from benchsuite.site import build_site

    if rebuild:
        _report(build_site(db, out))
    if not (out / "index.html").is_file():
        raise BenchError(f"{out}: no site here; run `bench leaderboard build --out {out}` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise BenchError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from None
    console.print(f"http://{host}:{server.server_port}/ serves {escape(str(out))} (Ctrl-C stops)", soft_wrap=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


@app.command("publish")
def publish(
    db: DbOption = None,
    out: OutOption = Path("site"),
    cname: Annotated[str | None, typer.Option(help="custom domain for GitHub Pages (writes CNAME)")] = None,
) -> None:
    """Write a folder ready to push to GitHub Pages or any static host (adds .nojekyll)."""
    from benchsuite.site import publish_site

    _report(publish_site(db, out, cname))
    console.print(f"push {out}/ as the root of a gh-pages branch (or point Pages at it); every link is relative", soft_wrap=True)
