"""MkDocs hooks: pages generated from the code and the repository, so that they cannot drift.

* ``index.md`` is the README (its links moved from the repository root to ``docs/``);
* ``cli.md`` gets ``avae COMMAND --help`` of every subcommand, from the parser itself;
* the benchmark results and the shipped models' README, which live outside ``docs/``, join the site
  under their repository paths, so the pages' links to them are checked like any other.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = ["benchmarks/results/*.md", "src/avae/pretrained/README.md"]  # repository files the pages link to


def on_files(files, config):
    for pattern in OUTSIDE:
        for path in sorted(REPO.glob(pattern)):
            files.append(File.generated(config, f"repo/{path.relative_to(REPO).as_posix()}",
                                        content=path.read_text()))
    return files


def _readme() -> str:
    text = (REPO / "README.md").read_text().replace("](docs/", "](")
    return re.sub(r"\]\((benchmarks|src)/", r"](repo/\1/", text)


def _cli() -> str:
    from avae.cli import build_parser

    parser = build_parser()
    sections = [f"## `avae`\n\n```text\n{parser.format_help()}```\n"]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        sections.append(f"## `avae {name}`\n\n```text\n{command.format_help()}```\n")
    return "\n".join(sections)


def _outside_links(markdown: str, page_uri: str) -> str:
    """Relative links from a page to repository files outside docs/ (benchmarks/, src/), at any depth,
    pointed at those files' copies under repo/."""
    here = posixpath.dirname(page_uri)

    def move(match):
        target = posixpath.normpath(posixpath.join("docs", here, match.group(1)))
        if not target.startswith(("benchmarks/", "src/")):
            return match.group(0)
        return "](" + posixpath.relpath(f"repo/{target}", here or ".") + ")"

    return re.sub(r"\]\(((?:\.\./)+[^)#\s]+)\)", move, markdown)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "index.md":
        return _readme()
    if page.file.src_uri == "cli.md":
        return markdown.replace("<!-- generated: avae --help -->", _cli())
    return _outside_links(markdown, page.file.src_uri)
