"""mkdocs hook: the pages link to files of the repository outside ``docs/`` (configs, scripts, tests) and include
``CONTRIBUTING.md``, which lives at the root where GitHub shows it.

* ``<!-- include: ../CONTRIBUTING.md -->`` on a line of its own is replaced by that file, its relative links
  rebased onto the page's folder;
* a relative link to a file or folder outside ``docs/`` becomes a link into the repository's web view when
  ``mkdocs.yml`` sets ``repo_url``, else the path in code font; a link to a path that does not exist fails the
  build (links inside ``docs/`` are mkdocs's own to check).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$", re.M)
# [text](target) and ![alt](target); not inside code spans or fences (handled by _outside_code).
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    page_dir = (docs / page.file.src_path).parent

    def include(m: re.Match[str]) -> str:
        path = (page_dir / m["path"]).resolve()
        if not path.is_file():
            raise PluginError(f"{page.file.src_path}: include {m['path']}: no such file")
        text = path.read_text(encoding="utf-8")
        return _rebase(text, path.parent, page_dir)

    markdown = INCLUDE.sub(include, markdown)
    return _outside_code(markdown, lambda chunk: LINK.sub(lambda m: _link(m, page, page_dir, docs, root, config),
                                                          chunk))


def _outside_code(markdown: str, fn: Any) -> str:
    out, last = [], 0
    for m in FENCE.finditer(markdown):
        out += [_outside_spans(markdown[last:m.start()], fn), m.group(0)]
        last = m.end()
    out.append(_outside_spans(markdown[last:], fn))
    return "".join(out)


def _outside_spans(text: str, fn: Any) -> str:
    """``fn`` on ``text`` with its code spans hidden (a link's text may hold one; a code span's text is no link)."""
    spans: list[str] = []

    def hide(m: re.Match[str]) -> str:
        spans.append(m.group(0))
        return f"\0{len(spans) - 1}\0"

    out = fn(re.sub(r"`[^`\n]*`", hide, text))
    return re.sub(r"\0(\d+)\0", lambda m: spans[int(m[1])], out)


def _is_relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target)


def _rebase(text: str, src_dir: Path, page_dir: Path) -> str:
    def fix(m: re.Match[str]) -> str:
        target = m["target"]
        if not _is_relative(target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        new = posixpath.relpath((src_dir / path).resolve().as_posix(), page_dir.as_posix())
        return f"{m['bang']}[{m['text']}]({new}{'#' + anchor if anchor else ''})"

    return _outside_code(text, lambda chunk: LINK.sub(fix, chunk))


def _link(m: re.Match[str], page: Any, page_dir: Path, docs: Path, root: Path, config: Any) -> str:
    target = m["target"]
    if not _is_relative(target):
        return m.group(0)
    path, _, anchor = target.partition("#")
    if not path:
        return m.group(0)
    resolved = (page_dir / path).resolve()
    if resolved == docs or docs in resolved.parents:
        return m.group(0)  # a page or an image of the site: mkdocs checks it
    if root not in resolved.parents or not resolved.exists():
        raise PluginError(f"{page.file.src_path}: link to {target}: no such file in the repository")
    rel = resolved.relative_to(root).as_posix()
    repo_url = (config.get("repo_url") or "").rstrip("/")
    if repo_url:
        kind = "tree" if resolved.is_dir() else "blob"
        return f"{m['bang']}[{m['text']}]({repo_url}/{kind}/main/{rel}{'#' + anchor if anchor else ''})"
    text = re.sub(r"\0(\d+)\0", "", m["text"]).strip() if "\0" in m["text"] else m["text"]
    if not text or text.strip("`") in (rel, Path(rel).name, Path(rel).stem):
        return f"`{rel}`"  # the text was the path (or a code span naming it): the path alone says it
    return f"{m['text']} (`{rel}`)"
