"""Griffe extension: Sphinx cross-reference roles in docstrings become mkdocs-autorefs links.

The docstrings use Sphinx roles (``:class:`~gaqat_wrap.optim.GAQATConfig```, ``:func:`quantize_model```, ...),
which Markdown would show verbatim. When mkdocstrings loads a package, this extension rewrites every role in
every docstring of the package:

* a target that names an object of a loaded package becomes an autorefs link ``[`Name`][full.path]``. The
  path is resolved the way Python would see the name from the docstring's own scope (its class, its module,
  their imports), else by a package-wide search for a unique object of that name (of the role's kind,
  when several kinds share the name). ``from .x import x``
  shadows the submodule ``x`` with the object ``x``, as in Python. An object without a docstring is not
  rendered by mkdocstrings, so the link goes to the closest enclosing object that has one (an instance
  attribute links to its class). If the linked object is on no page, autorefs reports the link and
  ``mkdocs build --strict`` fails;
* a target outside the loaded packages (``torch.nn.Module``) or a role marked ``!`` becomes inline code;
* a target that cannot be resolved at all (a typo, an ambiguous short name) becomes inline code and is
  logged as a warning, which fails ``mkdocs build --strict``.

Like Sphinx, ``~`` shows only the last component and ``:func:`` / ``:meth:`` titles end in ``()``.
Loaded from ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import griffe

# a logger under "mkdocs." so that `mkdocs build --strict` counts its warnings
LOGGER = logging.getLogger("mkdocs.plugins.sphinx_roles")

ROLE = re.compile(r":(?:py:)?(?P<role>class|func|meth|data|attr|mod|exc|obj|const|type):`(?P<body>[^`]+)`")
"""A Sphinx role in the Python domain: ``:role:`target``` or ``:role:`title <target>```."""

CALLABLE_ROLES = frozenset({"func", "meth"})
ROLE_KINDS = {"mod": griffe.Kind.MODULE, "class": griffe.Kind.CLASS, "exc": griffe.Kind.CLASS,
              "func": griffe.Kind.FUNCTION, "meth": griffe.Kind.FUNCTION, "data": griffe.Kind.ATTRIBUTE,
              "attr": griffe.Kind.ATTRIBUTE, "const": griffe.Kind.ATTRIBUTE}
"""The kind of object each role names: a short name that several objects share is looked up among that kind."""


@dataclass(frozen=True)
class RoleReference:
    """One role, split into what the reader sees and what it points at.

    Examples:
        >>> RoleReference.parse("func", "~gaqat_wrap.quant.quantize_model")
        RoleReference(target='gaqat_wrap.quant.quantize_model', title='quantize_model()', link=True)
        >>> RoleReference.parse("class", "the config <GAQATConfig>").title
        'the config'
        >>> RoleReference.parse("meth", "!state_dict").link
        False
    """

    target: str
    title: str
    link: bool

    @classmethod
    def parse(cls, role: str, body: str) -> RoleReference:
        """Read the body of a role as Sphinx does (explicit title, ``~``, ``!`` and a leading ``.``)."""
        explicit = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", body.strip(), flags=re.DOTALL)
        target = (explicit["target"] if explicit else body).strip()
        link = not target.startswith("!")
        target = target.lstrip("!")
        short = target.startswith("~")
        target = target.lstrip("~").lstrip(".")
        if explicit:
            title = explicit["title"]
        else:
            title = target.rsplit(".", 1)[-1] if short else target
            title += "()" if role in CALLABLE_ROLES else ""
        return cls(target=target, title=title, link=link)


def rewrite_roles(text: str, resolve: Callable[[str, str], str | None]) -> str:
    """Replace every Sphinx role in ``text`` by an autorefs link, or by inline code where ``resolve`` gives None.

    ``resolve(role, target)`` maps a role (``"class"``) and its target as written to the identifier of the
    object it names.

    Examples:
        >>> known = {"GAQATConfig": "gaqat_wrap.optim.config.GAQATConfig"}
        >>> by_last_name = lambda role, target: known.get(target.split(".")[-1])
        >>> rewrite_roles("Options: :class:`~gaqat_wrap.optim.GAQATConfig`.", by_last_name)
        'Options: [`GAQATConfig`][gaqat_wrap.optim.config.GAQATConfig].'
        >>> rewrite_roles("A :class:`torch.nn.Module`.", by_last_name)
        'A `torch.nn.Module`.'
    """

    def replace(match: re.Match[str]) -> str:
        reference = RoleReference.parse(match["role"], match["body"])
        identifier = resolve(match["role"], reference.target) if reference.link else None
        code = f"`{reference.title}`"
        return f"[{code}][{identifier}]" if identifier else code

    return ROLE.sub(replace, text)


def _lookup(collection: griffe.ModulesCollection, path: str) -> griffe.Object | griffe.Alias | None:
    """The object at ``path`` in the loaded packages (re-exports followed), or None."""
    try:
        return collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _identifier(obj: griffe.Object | griffe.Alias, role: str) -> str:
    """The path under which mkdocstrings renders what the role means (see the module docstring for the rules)."""
    try:
        obj = obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return obj.path
    if role != "mod" and obj.is_module and obj.name in obj.members:
        obj = obj.members[obj.name]  # `from .calibrate import calibrate` in a package: the name is the function
        obj = obj.final_target if obj.is_alias else obj
    while obj.docstring is None and obj.parent is not None and not obj.is_module:
        obj = obj.parent
    return obj.path


def _resolve_in_scope(owner: griffe.Object, name: str) -> str | None:
    """Where ``name`` points as seen from ``owner``: its own members, then those of its enclosing class(es),
    then its module's (definitions and imports), as Sphinx looks a name up; None when none has it."""
    scope: griffe.Object | None = owner
    while scope is not None:
        if name in scope.members:
            member = scope.members[name]
            return member.target_path if member.is_alias else member.path
        scope = None if scope.is_module else scope.parent
    return None


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined inside it (re-exports are skipped: their docstring is their target's)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class SphinxRolesToAutorefs(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring of a loaded package (see the module docstring).

    Examples:
        >>> import textwrap
        >>> source = textwrap.dedent('''
        ...     def quantize_model():
        ...         "Swap layers."
        ...     def calibrate():
        ...         "Run after :func:`quantize_model`; not :class:`torch.nn.Module` or :func:`~.quantize_model`."
        ... ''')
        >>> with griffe.temporary_visited_package("demo", {"__init__.py": source},
        ...                                     extensions=griffe.load_extensions(SphinxRolesToAutorefs)) as pkg:
        ...     print(pkg["calibrate"].docstring.value)
        Run after [`quantize_model()`][demo.quantize_model]; not `torch.nn.Module` or [`quantize_model()`][demo.quantize_model].
    """

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: object) -> None:
        """Rewrite the docstrings of ``pkg`` once it is fully loaded (so every name in it can be resolved)."""
        collection = loader.modules_collection
        by_name: dict[str, dict[str, griffe.Kind]] = defaultdict(dict)
        for obj in _walk(pkg):
            by_name[obj.name][obj.path] = obj.kind
        for obj in _walk(pkg):
            if obj.docstring is not None and ROLE.search(obj.docstring.value):
                obj.docstring.value = rewrite_roles(
                    obj.docstring.value,
                    lambda role, target, owner=obj: self._resolve(owner, role, target, collection, by_name))

    @staticmethod
    def _resolve(owner: griffe.Object, role: str, target: str, collection: griffe.ModulesCollection,
                 by_name: dict[str, dict[str, griffe.Kind]]) -> str | None:
        """The identifier ``target`` names, seen from ``owner``'s docstring; None for an object outside the packages."""
        head, _, rest = target.partition(".")
        if head in collection:
            path = target
        elif (in_scope := _resolve_in_scope(owner, head)) is not None:
            path = in_scope + (f".{rest}" if rest else "")
        else:
            found = by_name.get(head, {})
            if len(found) > 1 and not rest and (kind := ROLE_KINDS.get(role)):
                found = {path: k for path, k in found.items() if k is kind} or found
            if len(found) != 1:
                why = "no object of that name" if not found else f"ambiguous: {', '.join(sorted(found))}"
                LOGGER.warning("%s: cannot resolve the Sphinx role target %r (%s); shown as code. Write the "
                               "full path, e.g. :func:`~package.module.name`.", owner.path, target, why)
                return None
            path = next(iter(found)) + (f".{rest}" if rest else "")
        if path.partition(".")[0] not in collection:
            return None  # another library's object (torch, transformers): no page here to link to
        obj = _lookup(collection, path)
        if obj is None:
            LOGGER.warning("%s: the Sphinx role target %r points at %s, which does not exist; shown as code.",
                           owner.path, target, path)
            return None
        return _identifier(obj, role)
