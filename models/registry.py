"""Name → component registries (the timm pattern).

Every pluggable piece (distance, loss, miner, regularizer, backbone) is registered with a decorator next to
its code; `create(name, **params)` and `names()` are the only public ways in. Each entry carries its
parameter schema (name, default, type) read from the factory's signature, so the API, the UI and the tests
learn about a new entry without being edited.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownComponentError(ValueError):
    """A name that is not in a registry; the message lists the allowed names."""


class InvalidParameterError(ValueError):
    """A parameter that the component does not take, or a value it rejects."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    kind: str  # "float" | "int" | "bool" | "str" | "any"
    help: str = ""


@dataclass
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    params: tuple[Param, ...]
    summary: str
    tags: frozenset[str] = field(default_factory=frozenset)

    def schema(self) -> dict[str, Any]:
        """JSON-friendly description for the API and the UI."""
        return {
            "name": self.name,
            "summary": self.summary,
            "tags": sorted(self.tags),
            "params": [{"name": p.name, "default": p.default, "type": p.kind, "help": p.help} for p in self.params],
        }


def _kind_of(annotation: Any, default: Any) -> str:
    text = str(annotation)
    for kind in ("bool", "int", "float", "str"):
        if text == kind or text.startswith(kind + " ") or text == f"<class '{kind}'>":
            return kind
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, (int, float, str)):
        return type(default).__name__
    return "any"


class Registry(Generic[T]):
    """A named collection of factories.

    `injected` names the factory arguments that the caller supplies (e.g. the distance object a loss is built
    with); they are not user parameters and do not appear in the schema.
    """

    def __init__(self, kind: str, injected: tuple[str, ...] = ()):
        self.kind = kind
        self.injected = injected
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, tags: tuple[str, ...] = (), help: dict[str, str] | None = None) -> Callable:
        help = help or {}

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            params = []
            for p in inspect.signature(factory).parameters.values():
                if p.name in self.injected or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
                    continue
                default = None if p.default is inspect.Parameter.empty else p.default
                params.append(Param(p.name, default, _kind_of(p.annotation, default), help.get(p.name, "")))
            doc = inspect.getdoc(factory) or ""
            self._entries[name] = Entry(name, factory, tuple(params), doc.split("\n\n")[0].replace("\n", " "),
                                        frozenset(tags))
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}") from None

    def check_params(self, name: str, params: dict[str, Any]) -> None:
        """Raise InvalidParameterError naming any parameter the entry does not take."""
        allowed = {p.name for p in self.entry(name).params}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise InvalidParameterError(
                f"{self.kind} '{name}' has no parameter {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(sorted(allowed)) or 'no parameters'}")

    def create(self, name: str, /, *injected: Any, **params: Any) -> T:
        self.check_params(name, params)
        return self._entries[name].factory(*injected, **params)

    def schemas(self) -> list[dict[str, Any]]:
        return [self._entries[n].schema() for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
