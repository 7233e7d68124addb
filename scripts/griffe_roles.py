"""A griffe extension for the API reference: Sphinx roles in skembed's docstrings become links.

skembed's numpy-style docstrings refer to other objects as ``:class:`RaggedEmbeddings```,
``:func:`skembed.set_cache```, ``:meth:`RaggedEmbeddings.to_frame```... mkdocstrings renders
Markdown, so each role is rewritten before rendering:

- to a cross-reference (``[RaggedEmbeddings][skembed.RaggedEmbeddings]``) when the target is an
  object the API pages document (docs/api/*.md); mkdocs-autorefs then checks it, and
  ``mkdocs build --strict`` fails if it does not resolve;
- to inline code otherwise (private helpers, other packages), as Sphinx shows a target it
  cannot resolve.

Targets are looked up as Sphinx does: relative to the class and module of the docstring, then
from the top-level package (``skembed.<name>``).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import griffe
import yaml

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|obj|exc):`(~?)([^`]+)`")
DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.M)
BLOCK = re.compile(r"^:::\s+(\S+)[ \t]*\n((?:[ \t]+\S.*\n|[ \t]*\n)*)", re.M)  # with its options
API = Path(__file__).resolve().parent.parent / "docs" / "api"


def _documented() -> list[str]:
    """The identifiers the API pages render with ``::: identifier``."""
    return sorted(
        {m.group(1) for page in API.glob("*.md") for m in DIRECTIVE.finditer(page.read_text())}
    )


def _listed() -> dict[str, set[str]]:
    """The members each ``::: identifier`` names in its ``members`` option: the page renders
    them, imported ones (a module's re-exports, e.g. ``skembed.dask.output_meta``) too."""
    listed: dict[str, set[str]] = {}
    for page in API.glob("*.md"):
        for m in BLOCK.finditer(page.read_text()):
            options = (yaml.safe_load(textwrap.dedent(m.group(2))) or {}).get("options") or {}
            listed.setdefault(m.group(1), set()).update(options.get("members") or ())
    return listed


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg, loader, **kwargs) -> None:
        if pkg.name != "skembed":
            return
        self.pkg = pkg
        self.roots: dict[str, object] = {}  # public identifier -> griffe object
        self.public: dict[str, str] = {}  # canonical path -> public identifier
        self.listed = _listed()  # public identifier -> the members its page names
        for ident in _documented():
            try:
                obj = pkg.get_member(ident.split(".", 1)[1]) if "." in ident else pkg
                obj = obj.final_target if obj.is_alias else obj
            except Exception:  # a wrong ::: line: mkdocstrings reports it itself
                continue
            self.roots[ident] = obj
            self.public[obj.path] = ident
        for obj in _walk(pkg):
            if obj.docstring is not None and ":`" in obj.docstring.value:
                obj.docstring.value = ROLE.sub(
                    lambda m, o=obj: self._role(m, o), obj.docstring.value
                )

    def _role(self, match: re.Match, obj) -> str:
        short, target = match.group(1) == "~", match.group(2).strip()
        shown = target.rsplit(".", 1)[-1] if short else target
        candidates = self._candidates(target, obj)
        for candidate in candidates:
            if self._exists(candidate):
                return f"[`{shown}`][{candidate}]"
        for candidate in {target, f"skembed.{target}"} & set(candidates):
            # a missing member of a documented class, named from the package: a broken link
            root = self._root(candidate)
            if root is not None and self.roots[root].is_class and "._" not in candidate:
                return f"[`{shown}`][{candidate}]"  # that mkdocs-autorefs reports
        return f"`{shown}`"

    def _candidates(self, target: str, obj) -> list[str]:
        if target.startswith("skembed."):
            out = [target]
            head, _, rest = target.rpartition(".")
            if head in self.public:  # a canonical module path of a documented object
                out.append(f"{self.public[head]}.{rest}")
            return out
        out = []
        scope = obj
        while scope is not None:  # the class, then the module(s) the docstring is in
            if scope.path in self.public:
                out.append(f"{self.public[scope.path]}.{target}")
            scope = scope.parent
        out.append(f"skembed.{target}")
        return out

    def _root(self, ident: str) -> str | None:
        """The longest documented identifier that ``ident`` is or starts with."""
        roots = [r for r in self.roots if ident == r or ident.startswith(r + ".")]
        return max(roots, key=len, default=None)

    def _exists(self, ident: str) -> bool:
        root = self._root(ident)
        if root is None:
            return False
        obj, path = self.roots[root], root
        for part in ident[len(root) :].split(".")[1:]:
            if part.startswith("_"):
                return False  # filtered out of the pages
            members = obj.all_members if obj.is_class else obj.members
            if part not in members:
                return False
            if obj.is_module and members[part].is_alias and part not in self.listed.get(path, ()):
                return False  # an import the page does not name: not rendered there
            obj, path = members[part], f"{path}.{part}"
            try:
                obj = obj.final_target if obj.is_alias else obj
            except Exception:
                return False
        return True


def _walk(obj):
    if obj.is_alias:
        return
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)
