"""`publisher check`: the findings of publisher/check.py, for people (text) or tools (json)."""

from __future__ import annotations

import click

from publisher.check import KIND_TITLES, KINDS, PROGRESS_MIN_URLS, Checked, Finding, run_check, to_json
from publisher.cli import get_settings
from publisher.cli.progress import link_progress

_COLOUR = {"error": "red", "warning": "yellow"}


@click.command("check")
@click.argument("issues", nargs=-1, metavar="[ISSUE|DATE|FOLDER]...")
@click.option("--offline", is_flag=True, help="Skip the link check (no network).")
@click.option("--strict", is_flag=True, help="Warnings fail too (exit status 1).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for people, json for tools.")
@click.pass_context
def check_command(ctx: click.Context, issues: tuple[str, ...], offline: bool, strict: bool, fmt: str) -> None:
    """Check issues before publishing: structure, 导读, channel limits, links, repeats.

    Each argument is an issue file, a date (YYYY-MM-DD, in [paths] issues) or a folder; none
    checks every issue in [paths] issues.

    Exit status 0 when clean, 1 on any error (with --strict, on any warning too).
    """
    from publisher.pipeline import issue_paths

    settings = get_settings(ctx)
    with link_progress(PROGRESS_MIN_URLS) as progress:
        checked_files, findings, links = run_check(issue_paths(settings, issues), settings, offline=offline,
                                                   progress=progress if fmt == "text" else None)
    if fmt == "json":
        click.echo(to_json(checked_files, findings, links))
    else:
        print_text(checked_files, findings)
    failing = {"error", "warning"} if strict else {"error"}
    if any(f.level in failing for f in findings):
        ctx.exit(1)


def print_text(checked_files: list[Checked], findings: list[Finding]) -> None:
    """Findings grouped by file and kind on stderr (as the compilers do); one summary line per
    file on stdout."""
    by_file: dict[str | None, list[Finding]] = {}
    for f in findings:
        by_file.setdefault(f.file, []).append(f)
    for c in checked_files:
        own = by_file.pop(str(c.path), [])
        _print_group(str(c.path), own)
        errors = sum(f.level == "error" for f in own)
        warnings = len(own) - errors
        if c.issue is None:
            click.secho(f"{c.path}: cannot be read — {errors} error(s)", fg="red", bold=True)
        elif errors:
            click.secho(f"{c.path}: {errors} error(s), {warnings} warning(s)", fg="red", bold=True)
        else:
            issue = c.issue
            click.secho(f"{c.path}: ok — {issue.date} {issue.status}, {len(issue.sections)} sections, "
                        f"{issue.item_count} items, {warnings} warning(s)", fg="green" if not warnings else None)
    for file, rest in by_file.items():  # findings about no file in particular (or another file)
        _print_group(file or "(all issues)", rest)


def _print_group(title: str, findings: list[Finding]) -> None:
    if not findings:
        return
    for kind in KINDS:
        group = [f for f in findings if f.kind == kind]
        if not group:
            continue
        click.secho(f"── {title}: {KIND_TITLES[kind]} ({len(group)})", bold=True, err=True)
        for f in sorted(group, key=lambda f: (f.line or 0, f.level)):
            extra = ""
            if f.channel and f.value is not None and f.limit is not None and f.kind == "limit":
                extra = f" [{f.channel}: {f.value} > {f.limit}]" if isinstance(f.value, int) else f" [{f.channel}]"
            click.secho(f"  {f}{extra}", fg=_COLOUR.get(f.level), err=True)
