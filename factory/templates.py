"""Jinja prompt templates, rendered sandboxed and strict.

A template that needs a variable nobody provides fails at load time, listing every
missing name, before a single request is sent. A name the template only tests with
`is defined` is optional.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from factory.errors import TemplateError


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    source: str
    sha256: str
    compiled: jinja2.Template
    variables: frozenset[str]  # the names it needs to render
    # Every name it reads, optional ones (`is defined`) too: what makes a seed variable used.
    referenced: frozenset[str] = frozenset()

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def static_text(self) -> list[str]:
        """The template's own words: its literal text, without what variables fill in."""
        ast = jinja2.Environment().parse(self.source)
        return [node.data for node in ast.find_all(jinja2.nodes.TemplateData)]

    def render(self, values: dict[str, Any]) -> str:
        try:
            return self.compiled.render(values).strip()
        except jinja2.UndefinedError as err:
            raise TemplateError(f"{self.path}: {err.message}") from err
        except jinja2.TemplateError as err:
            raise TemplateError(f"{self.path}: {err.__class__.__name__}: {err}") from err
        except Exception as err:  # a filter applied to the wrong type, say
            raise TemplateError(f"{self.path}: rendering failed: {err.__class__.__name__}: {err}") from err


class TemplateLibrary:
    """Finds templates by name in the prompts folders; loads each one once."""

    def __init__(self, search_path: Iterable[Path]):
        self.search_path = [Path(p) for p in search_path]
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(p) for p in self.search_path]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )
        self.env.filters["tojson_compact"] = _tojson_compact
        self._cache: dict[str, Template] = {}

    def load(self, name: str, provided: Iterable[str] = (), where: str = "") -> Template:
        """Load `name`; raise TemplateError if it uses variables not in `provided`."""
        if name not in self._cache:
            self._cache[name] = self._load(name, where)
        template = self._cache[name]
        missing = sorted(template.variables - set(provided) - set(self.env.globals))
        if missing:
            raise TemplateError(
                f"{template.path}: undefined variable{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} (provided: {', '.join(sorted(provided)) or 'none'})"
            )
        return template

    def peek(self, name: str, where: str = "") -> Template:
        """Load `name` without checking its variables: a template the run names but does
        not render (another mode's), read only for the names it uses."""
        if name not in self._cache:
            self._cache[name] = self._load(name, where)
        return self._cache[name]

    def _load(self, name: str, where: str) -> Template:
        label = f"{where}: " if where else ""
        try:
            source, filename, _ = self.env.loader.get_source(self.env, name)
        except jinja2.TemplateNotFound as err:
            searched = ", ".join(str(p) for p in self.search_path) or "no prompts folder found"
            raise TemplateError(f"{label}template {name!r} not found (searched: {searched})") from err
        except (OSError, UnicodeDecodeError) as err:
            raise TemplateError(f"{label}template {name!r} cannot be read ({err})") from err
        path = Path(filename)
        try:
            ast = self.env.parse(source, name, filename)
            compiled = self.env.get_template(name)
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"{path}:{err.lineno}: template syntax error: {err.message}") from err
        # A name only tested with `is defined` is optional: the template copes without it.
        optional = {test.node.name for test in ast.find_all(jinja2.nodes.Test)
                    if test.name in ("defined", "undefined") and isinstance(test.node, jinja2.nodes.Name)}
        referenced = set(jinja2.meta.find_undeclared_variables(ast))
        variables = referenced - optional
        # Included and imported templates count too: a missing name there fails the same.
        for ref in jinja2.meta.find_referenced_templates(ast):
            if ref is not None and ref != name:
                included = self._load(ref, where)
                variables |= included.variables
                referenced |= included.referenced
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        return Template(name, path, source, digest, compiled, frozenset(variables), frozenset(referenced))


def _tojson_compact(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
