"""The one dispatch every writer uses: a node goes to `visit_<its class name>`.

Modelled on docutils' `NodeVisitor.dispatch_visit`: a writer is a class with one method per
node type it can write, named after the node's class (`visit_Text`, `visit_ListBlock`, …). A
node type without a method is a programming error, `UnknownNodeError`, never silently dropped
text. The Markdown, plain-text and HTML writers all share it.
"""

from __future__ import annotations

from typing import Any


class UnknownNodeError(TypeError):
    """A node type the writer has no method for (a programming error, not a user error)."""

    def __init__(self, writer: object, node: object):
        super().__init__(
            f"{type(writer).__name__} cannot write a {type(node).__name__} node; "
            f"add a method visit_{type(node).__name__} for it instead of dropping its text"
        )


class NodeVisitor:
    """Base of the writers: `dispatch(node, *args)` calls `self.visit_<NodeClass>(node, *args)`."""

    def dispatch(self, node: object, *args: Any) -> Any:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise UnknownNodeError(self, node)
        return method(node, *args)

    def expect(self, node: object, kind: type) -> None:
        """Refuse a node that is not a `kind` where only a `kind` can stand (a Brief, an Item …)."""
        if not isinstance(node, kind):
            raise UnknownNodeError(self, node)
