"""griffe extensions for the API reference (mkdocs.yml lists them).

* :class:`ReSTRoles`: the docstrings' reST roles (``:func:`~lightsr.hub.fetch```) become code spans (``fetch``),
  since the docstrings are rendered as Markdown.
* :class:`DocumentedAttributes`: every public class and function is shown, with its signature even without a
  docstring (``show_if_no_docstring``), but attributes only when they have a docstring: an object's fields and
  instance variables are its class's business, and the configs reference documents the config fields.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":[a-z]+:`(?P<tilde>~?)(?P<target>[^`]+)`")


def _code(m: re.Match[str]) -> str:
    target = m["target"]
    return f"`{target.rsplit('.', 1)[-1] if m['tilde'] else target}`"


class ReSTRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)


class DocumentedAttributes(griffe.Extension):
    def _drop(self, obj: griffe.Object) -> None:
        for name, member in list(obj.members.items()):
            if not member.is_alias and member.is_attribute and member.docstring is None:
                del obj.members[name]

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        self._drop(cls)

    def on_module_members(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        self._drop(mod)
