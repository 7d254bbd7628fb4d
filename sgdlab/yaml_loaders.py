"""The YAML loaders of every config file the lab reads (run, experiment and replica configs):
safe loaders (plain data, nothing executed) that read ``1e-3`` as a number and refuse a key
given twice or a recursive alias. Light on purpose: ``sgdlab list`` and ``--help`` import it
without the numerical stack."""
from __future__ import annotations

import re

_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X)


_EXPONENT_LOADERS: dict[type, type] = {}


def exponent_floats(base: type) -> type:
    """``base`` (a YAML safe loader class) that also reads ``1e-3`` as a float (YAML 1.1
    wants ``1.0e-3``) and ``-.5`` as one (YAML 1.1 reads ``.5`` but not ``-.5``), as YAML 1.2
    does, for every config file the lab reads (one class per base)."""
    if base not in _EXPONENT_LOADERS:
        cls = type(f"ExponentFloat{base.__name__}", (base,), {})
        cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
        _EXPONENT_LOADERS[base] = cls
    return _EXPONENT_LOADERS[base]


_STRICT_LOADERS: dict[type, type] = {}
# values (scalars and collections) a config document's aliases may add to those it writes out:
# the catalogue's largest entry holds about 2,000; nested aliases reach billions in a few
# lines, which walking the config (validation, the store's JSON record) never finishes
MAX_EXPANDED_VALUES = 100_000


def strict_yaml_loader(base: type) -> type:
    """``base`` (a YAML safe loader class) refusing what would silently change a config: a key
    given twice in one mapping (YAML keeps the last) and a recursive alias (``a: &x [*x]``,
    endless data); and a document whose aliases expand it by more than
    :data:`MAX_EXPANDED_VALUES` values over the distinct ones it writes (a long list written
    out is read). Each is a ``yaml.constructor.ConstructorError`` with the line, so each reader of
    configs reports them as it reports any YAML error. Here, below every layer,
    for the run, experiment and replica config readers alike."""
    if base not in _STRICT_LOADERS:
        from yaml.constructor import ConstructorError
        from yaml.nodes import CollectionNode, MappingNode

        class Strict(base):
            def construct_document(self, node):
                _no_cycle(node, set(), set())
                written: set = set()
                size = _expanded_size(node, {}, written)
                # a long list written out is walked in time; only aliases multiply the work
                if size - len(written) > MAX_EXPANDED_VALUES:
                    raise ConstructorError(None, None, f"aliases expand this document to "
                                           f"{size:,} values, more than the "
                                           f"{MAX_EXPANDED_VALUES:,} a config may add to the "
                                           f"{len(written):,} it writes (nested aliases of "
                                           "aliases?)", node.start_mark)
                return super().construct_document(node)

            def construct_mapping(self, node, deep=False):
                if isinstance(node, MappingNode):
                    seen: dict = {}
                    for key_node, _ in node.value:
                        key = self.construct_object(key_node, deep=True) \
                            if key_node.tag != "tag:yaml.org,2002:merge" else None
                        try:
                            first = seen.setdefault(key, key_node) if key is not None else None
                        except TypeError:             # an unhashable key: base reports it
                            continue
                        if first is not None and first is not key_node:
                            raise ConstructorError(
                                "while reading a mapping", node.start_mark,
                                f"key {key!r} is given twice (first on line "
                                f"{first.start_mark.line + 1}); YAML would keep only the last",
                                key_node.start_mark)
                return super().construct_mapping(node, deep=deep)

        def _no_cycle(node, open_nodes: set, done: set) -> None:
            if not isinstance(node, CollectionNode) or id(node) in done:
                return
            if id(node) in open_nodes:
                raise ConstructorError(None, None, "recursive alias: a collection that "
                                       "contains itself", node.start_mark)
            open_nodes.add(id(node))
            for item in node.value:
                for child in (item if isinstance(item, tuple) else (item,)):
                    _no_cycle(child, open_nodes, done)
            open_nodes.discard(id(node))
            done.add(id(node))

        def _expanded_size(node, sizes: dict, written: set) -> int:
            # once per distinct node (each put in ``written``): the count of a bomb is
            # computed, never built
            written.add(id(node))
            if not isinstance(node, CollectionNode):
                return 1
            if id(node) not in sizes:
                sizes[id(node)] = 1 + sum(_expanded_size(child, sizes, written)
                                          for item in node.value
                                          for child in (item if isinstance(item, tuple)
                                                        else (item,)))
            return sizes[id(node)]

        Strict.__name__ = Strict.__qualname__ = f"Strict{base.__name__}"
        _STRICT_LOADERS[base] = Strict
    return _STRICT_LOADERS[base]


def config_loader() -> type:
    """The loader of run and replica config files: ``yaml.SafeLoader`` with exponent floats,
    strict."""
    import yaml

    return strict_yaml_loader(exponent_floats(yaml.SafeLoader))


def yaml_problem(e: Exception, text: str | None = None) -> str:
    """One line for a YAML error of a config: where, and what (a tag is named as such; a
    parse error names the construct it was reading and where that starts; with the parsed
    ``text``, a tab that stopped the scanner is named as one: libyaml's message omits the
    character)."""
    from yaml.constructor import ConstructorError     # its problems say all (a key twice, ...)

    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = (getattr(e, "problem", None) or str(e)).strip().splitlines()[0]
    if mark is not None and text is not None and "cannot start any token" in problem:
        line = (text.splitlines()[mark.line:mark.line + 1] or [""])[0]
        if line[mark.column:mark.column + 1] == "\t":
            return (f"{where}not valid YAML: a tab character, which YAML does not take for "
                    "indentation or between items: write spaces instead")
    if "constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip().strip("'\"")
        return (f"{where}YAML tag {tag!r} is not allowed: a config is plain data (mappings, "
                "lists, numbers, strings)")
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None and start is not mark \
            and not isinstance(e, ConstructorError):
        problem += f" ({context}, from line {start.line + 1}, column {start.column + 1})"
    return f"{where}not valid YAML: {problem}"
