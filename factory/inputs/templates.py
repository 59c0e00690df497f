"""Jinja prompt templates, rendered sandboxed and strict.

A template that needs a variable nobody provides fails at load time, listing every
missing name, before a single request is sent. A name the template only tests with
`is defined` is optional.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import jinja2
import jinja2.meta
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from factory.core import constants
from factory.core.errors import TemplateError


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
    includes: tuple["Template", ...] = ()  # the templates it includes or imports, loaded

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def static_text(self) -> list[str]:
        """The template's own words: its literal text, without what variables fill in."""
        ast = jinja2.Environment().parse(self.source)
        return [node.data for node in ast.find_all(jinja2.nodes.TemplateData)]

    def render(self, values: dict[str, Any]) -> str:
        try:
            return _bounded_render(self.compiled, values).strip()
        except RenderLimit as err:
            raise TemplateError(f"{self.path}: rendering stopped: {err}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"{self.path}: {err.message}") from err
        except jinja2.TemplateError as err:
            raise TemplateError(f"{self.path}: {err.__class__.__name__}: {err}") from err
        except Exception as err:  # a filter applied to the wrong type, say
            raise TemplateError(f"{self.path}: rendering failed: {err.__class__.__name__}: {err}") from err


class RenderLimit(Exception):
    """A render went past the size or time a prompt may take."""


_LIMITS = (f"a prompt may be {constants.RENDER_MAX_CHARS:,} characters and take {constants.RENDER_MAX_SECONDS:g} s "
           "to render (a loop over a huge range?)")
_deadline = threading.local()


def _check_time() -> None:
    deadline = getattr(_deadline, "at", None)
    if deadline is not None and time.monotonic() > deadline:
        raise RenderLimit(f"it ran over {constants.RENDER_MAX_SECONDS:g} s; {_LIMITS}")


def _bounded_render(compiled: jinja2.Template, values: dict[str, Any]) -> str:
    """Render chunk by chunk, stopping at RENDER_MAX_CHARS or RENDER_MAX_SECONDS."""
    _deadline.at = time.monotonic() + constants.RENDER_MAX_SECONDS
    try:
        parts, size = [], 0
        for chunk in compiled.generate(values):
            size += len(chunk)
            if size > constants.RENDER_MAX_CHARS:
                raise RenderLimit(f"it wrote over {constants.RENDER_MAX_CHARS:,} characters; {_LIMITS}")
            _check_time()
            parts.append(chunk)
        return "".join(parts)
    finally:
        _deadline.at = None


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to a call the environment can bound (Jinja's own is not interceptable)."""

    @optimizeconst
    def visit_Concat(self, node, frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with the work one render may do bounded: every call and every step of
    `range` checks the clock (a loop that writes nothing still stops), and `*`, `**`,
    `+` and `~` refuse results larger than a prompt may be."""

    intercepted_binops = frozenset({"*", "**", "+"})
    code_generator_class = _BoundedCodeGenerator

    def bounded_concat(self, parts: tuple) -> str:
        _check_time()
        texts = [str(p) for p in parts]
        if sum(map(len, texts)) > constants.RENDER_MAX_CHARS:
            raise RenderLimit(f"a text of {sum(map(len, texts)):,} characters; {_LIMITS}")
        return "".join(texts)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        _check_time()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator, left, right):
        _check_time()
        if operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
            if abs(left) > 1 and right > 4096:
                raise RenderLimit(f"{left!r} ** {right!r} is too large; {_LIMITS}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    if len(seq) * times > constants.RENDER_MAX_CHARS:
                        raise RenderLimit(f"a repetition of {len(seq) * times:,} items; {_LIMITS}")
        result = super().call_binop(context, operator, left, right)
        if operator == "+" and isinstance(result, (str, list)) and len(result) > constants.RENDER_MAX_CHARS:
            raise RenderLimit(f"a value of {len(result):,} items; {_LIMITS}")
        return result


def _bounded_range(*args: int) -> Iterator[int]:
    for i in safe_range(*args):  # the sandbox's own: at most MAX_RANGE items
        _check_time()
        yield i


class TemplateLibrary:
    """Finds templates by name in the prompts folders; loads each one once."""

    def __init__(self, search_path: Iterable[Path]):
        self.search_path = [Path(p) for p in search_path]
        self.env = BoundedSandbox(
            loader=jinja2.FileSystemLoader([str(p) for p in self.search_path]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )
        self.env.filters["tojson_compact"] = _tojson_compact
        self.env.globals["range"] = _bounded_range
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
        includes = []
        for ref in jinja2.meta.find_referenced_templates(ast):
            if ref is not None and ref != name:
                included = self._load(ref, where)
                includes.append(included)
                variables |= included.variables
                referenced |= included.referenced
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        return Template(name, path, source, digest, compiled, frozenset(variables), frozenset(referenced),
                        tuple(includes))


def with_includes(templates: Iterable[Template]) -> dict[str, Template]:
    """name -> template for `templates` and every template they include, at any depth."""
    out: dict[str, Template] = {}
    todo = list(templates)
    while todo:
        template = todo.pop()
        if template.name not in out:
            out[template.name] = template
            todo.extend(template.includes)
    return dict(sorted(out.items()))


def _tojson_compact(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
