"""YAML and JSON text read safely: PyYAML's safe loader (no `!!python` tag is ever constructed), a cap on
the document's size once its aliases are expanded (a "billion laughs" file is refused before it is
built), and nesting too deep for the parser refused instead of overflowing the stack.

Errors are ValueErrors with a one-line message, as json.loads and the config readers expect."""

from __future__ import annotations

import json

# Values a document may hold once every alias is expanded: a config file has a few dozen.
MAX_EXPANDED_NODES = 100_000


class DocumentTooLarge(ValueError):
    """A document that expands (through aliases) or nests beyond the caps."""


def expanded_size(node, limit: int = MAX_EXPANDED_NODES) -> int:
    """How many nodes `node` stands for with every alias expanded, counted over the composed graph (an alias
    is the same node object as its anchor, so memoising by identity counts without expanding anything)."""
    import yaml

    memo: dict[int, int] = {}

    def size(n) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        memo[key] = 1  # a recursive alias (&a [*a]) counts once instead of looping
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        memo[key] = min(total, limit + 1)
        return memo[key]

    return size(node)


def load_yaml(text: str):
    """yaml.safe_load(text), refusing a document that expands beyond MAX_EXPANDED_NODES values."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = expanded_size(node)
        if n > MAX_EXPANDED_NODES:
            raise DocumentTooLarge(f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values (an alias "
                                   f"bomb); refused before building it")
        return loader.construct_document(node)
    except RecursionError:
        raise DocumentTooLarge("nested too deeply to parse") from None
    finally:
        loader.dispose()


def load_json(text: str):
    """json.loads(text), with nesting too deep for the parser as a one-line ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DocumentTooLarge("nested too deeply to parse") from None
