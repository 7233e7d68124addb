"""MkDocs hooks: the README and the examples in the site, and links out of docs/ checked.

The guides link to the README and to examples/ with paths relative to the repository
(``../README.md``, ``../examples/x.py``), which work when browsing the repository. In the site:

- the README becomes the page ``readme.md`` (its ``docs/...`` links pointed at the pages);
- ``examples.md`` lists every example with the first line of its docstring;
- every file outside docs/ that a page links to is copied under ``repo/`` and the link
  rewritten to the copy; a link to a file that does not exist is a warning, so
  ``mkdocs build --strict`` fails on it, as it does on broken links between pages.
"""

from __future__ import annotations

import ast
import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(\]\()([^)\s#]*)(#[^)\s]*)?(\))")
FENCE = re.compile(r"^(```|~~~)")
log = logging.getLogger("mkdocs.hooks.skembed")


def _origin(src_uri: str) -> str:
    """The folder, relative to the repository, that a page's relative links start from."""
    if src_uri == "readme.md":
        return ""
    return posixpath.dirname(posixpath.join("docs", src_uri))


def _targets(markdown: str, origin: str):
    """``(match, repository path)`` of each relative link outside code blocks."""
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        if fenced:
            continue
        for m in LINK.finditer(line):
            target = m.group(2)
            if not target or "://" in target or target.startswith(("/", "mailto:")):
                continue
            yield m, posixpath.normpath(posixpath.join(origin, target))


def _rewrite(markdown: str, src_uri: str) -> str:
    here = posixpath.dirname(src_uri)
    origin = _origin(src_uri)

    def replace(m: re.Match) -> str:
        target = m.group(2)
        if not target or "://" in target or target.startswith(("/", "mailto:")):
            return m.group(0)
        path = posixpath.normpath(posixpath.join(origin, target))
        if path.startswith("docs/"):
            site_path = path[len("docs/") :]
        elif path == "examples":
            site_path = "examples.md"
        elif path == "README.md":
            site_path = "readme.md"
        else:
            site_path = "repo/" + path
        new = posixpath.relpath(site_path, here or ".")
        return f"{m.group(1)}{new}{m.group(3) or ''}{m.group(4)}"

    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        out.append(line if fenced else LINK.sub(replace, line))
    return "".join(out)


def _examples_page() -> str:
    lines = [
        "# Examples",
        "",
        "Runnable scripts in the repository's `examples/` folder. Each runs offline on the",
        "packaged MiniLM or on small models it writes itself, into a temporary folder it removes",
        "(pass `--out` where offered to keep what it writes).",
        "",
        "| script | what it shows |",
        "|---|---|",
    ]
    for path in sorted((ROOT / "examples").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        lines.append(f"| [{path.name}](../examples/{path.name}) | {first.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    files.append(
        File.generated(config, "readme.md", content=(ROOT / "README.md").read_text("utf-8"))
    )
    files.append(File.generated(config, "examples.md", content=_examples_page()))
    copied: set[str] = set()
    sources = {"readme.md": (ROOT / "README.md").read_text("utf-8")}
    sources["examples.md"] = _examples_page()
    for page in Path(config["docs_dir"]).rglob("*.md"):
        sources[page.relative_to(config["docs_dir"]).as_posix()] = page.read_text("utf-8")
    for src_uri, markdown in sorted(sources.items()):
        for _, path in _targets(markdown, _origin(src_uri)):
            if path.startswith("docs/") or path in ("examples", "README.md"):
                continue  # pages: mkdocs checks those links itself
            if path.startswith("..") or not (ROOT / path).is_file():
                log.warning("%s links to %s, which is not a file of the repository", src_uri, path)
            elif path not in copied:
                copied.add(path)
                files.append(File.generated(config, "repo/" + path, abs_src_path=str(ROOT / path)))
    return files


def on_page_markdown(markdown, page, config, files):
    return _rewrite(markdown, page.file.src_uri)
