"""Where a provider's secrets sit, how the API shows them, and how a configuration sent back masked keeps them.

A kind's ``Config`` declares the places (see ``base.ProviderConfig``): whole secret fields, URLs (userinfo and
every query value: a vendor's ``?api_key=`` has no agreed name, so all of them are masked), header values, and
the literal strings of a request template. ``mask`` puts ``MASK`` in each place that holds something.

Operators edit a provider by reading it, changing what they mean to change and sending it back, so ``keep``
puts the stored secret back wherever the configuration sent carries ``MASK`` in a secret's place — found by
field, header name, query parameter (name and occurrence) or template path. A masked value with nothing stored
behind it is refused naming its place, and so is one whose destination changed (another SMTP host, another
vendor origin): a secret is only ever sent where it was given for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clarion.channels.base import MASK, ProviderConfig

Spec = type[ProviderConfig]
_ABSENT: Any = object()


class NotKept(Exception):
    """A masked value that cannot stand for a stored secret; ``field`` is its place (``config.headers.X``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def has_mask(value: Any) -> bool:
    """Whether ``MASK`` appears anywhere in ``value`` (only then does a save need the stored secrets)."""
    if isinstance(value, str):
        return MASK in value
    if isinstance(value, Mapping):
        return any(has_mask(v) for v in value.values())
    if isinstance(value, list):
        return any(has_mask(v) for v in value)
    return False


def mask(spec: Spec | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as the API may show it. An unknown kind (``spec`` None) shows every value masked."""
    if spec is None:
        return {k: (MASK if v else v) for k, v in config.items()}
    shown = dict(config)
    for name, value in config.items():
        if not value:
            continue
        if name in spec.secret_fields:
            shown[name] = MASK
        elif name in spec.url_fields and isinstance(value, str):
            shown[name] = _Url.parse(value).masked().format()
        elif name in spec.header_fields and isinstance(value, Mapping):
            shown[name] = {k: (MASK if v else v) for k, v in value.items()}
        elif name in spec.template_fields:
            shown[name] = _mask_template(value, spec, name)
    return shown


def keep(spec: Spec, new: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """``new`` with every masked secret replaced by the stored one; raises ``NotKept``."""
    kept: list[str] = []
    merged = dict(new)
    have = stored or {}
    for name, value in new.items():
        place = f"config.{name}"
        old = have.get(name, _ABSENT)
        if name in spec.secret_fields and value == MASK:
            if old is _ABSENT or not old:
                raise NotKept(place, "the masked value can only stand for a secret already stored; give the secret")
            merged[name] = old
            kept.append(place)
        elif name in spec.url_fields and isinstance(value, str) and MASK in value:
            merged[name] = _Url.parse(value).kept(_Url.parse(old) if isinstance(old, str) else None, place).format()
            kept.append(place)
        elif name in spec.header_fields and isinstance(value, Mapping):
            merged[name] = _keep_headers(value, old if isinstance(old, Mapping) else {}, place, kept)
        elif name in spec.template_fields and has_mask(value):
            merged[name] = _keep_template(value, old, place, kept)
    if kept and stored is not None and destination(spec, merged) != destination(spec, stored):
        raise NotKept(
            kept[0], "the destination changed (host or URL origin): a kept secret would go elsewhere; give it again"
        )
    return merged


def destination(spec: Spec, config: Mapping[str, Any]) -> tuple[str, ...]:
    """Where this configuration sends its secrets: the destination fields and the URL fields' origins."""
    fields = [str(config.get(name) or "").lower() for name in sorted(spec.destination_fields)]
    origins = [
        _Url.parse(url).origin() if isinstance(url := config.get(name), str) else "" for name in sorted(spec.url_fields)
    ]
    return (*fields, *origins)


# -- headers and templates -----------------------------------------------------------------------------------


def _keep_headers(new: Mapping[str, Any], old: Mapping[str, Any], place: str, kept: list[str]) -> dict[str, Any]:
    by_lower = {str(k).lower(): v for k, v in old.items()}
    merged = dict(new)
    for name, value in new.items():
        if value != MASK:
            continue
        stored = old[name] if name in old else by_lower.get(str(name).lower(), _ABSENT)
        if stored is _ABSENT or not stored:
            raise NotKept(f"{place}.{name}", "the masked value can only stand for a header already stored")
        merged[name] = stored
        kept.append(f"{place}.{name}")
    return merged


def _mask_template(value: Any, spec: Spec, name: str) -> Any:
    pattern = spec.template_fields[name]

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return MASK if node and not pattern.search(node) else node
        if isinstance(node, Mapping):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(value)


def _keep_template(new: Any, old: Any, place: str, kept: list[str]) -> Any:
    if new == MASK:
        if not isinstance(old, str) or not old:
            raise NotKept(place, "the masked value can only stand for a value already stored here")
        kept.append(place)
        return old
    if isinstance(new, Mapping):
        fields = old if isinstance(old, Mapping) else {}
        return {k: _keep_template(v, fields.get(k, _ABSENT), f"{place}.{k}", kept) for k, v in new.items()}
    if isinstance(new, list):
        items = old if isinstance(old, list) else []
        return [
            _keep_template(v, items[i] if i < len(items) else _ABSENT, f"{place}.{i}", kept) for i, v in enumerate(new)
        ]
    return new


# -- URLs ------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Url:
    """A URL split without normalising anything, so that formatting it gives back exactly what was parsed."""

    scheme: str  # "https:" (or "")
    authority: bool  # "//" present
    user: str | None
    password: str | None
    host: str  # host[:port]
    path: str
    query: list[tuple[str, str | None]] | None = field(default=None)  # None: no "?"; a value None: no "="
    fragment: str | None = None

    @classmethod
    def parse(cls, url: str) -> _Url:
        rest, hashed, fragment = url.partition("#")
        rest, asked, query = rest.partition("?")
        scheme, slashes, tail = rest.partition("//")
        if not slashes:
            scheme, tail = "", rest
        netloc, slash, path = tail.partition("/") if slashes else ("", "", tail)
        userinfo, at, host = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        pairs: list[tuple[str, str | None]] | None = None
        if asked:
            pairs = []
            for pair in query.split("&"):
                name, eq, value = pair.partition("=")
                pairs.append((name, value if eq else None))
        return cls(
            scheme,
            bool(slashes),
            user if at else None,
            password if colon else None,
            host,
            slash + path,
            pairs,
            fragment if hashed else None,
        )

    def format(self) -> str:
        text = self.scheme + ("//" if self.authority else "")
        if self.user is not None:
            text += self.user + (f":{self.password}" if self.password is not None else "") + "@"
        text += self.host + self.path
        if self.query is not None:
            text += "?" + "&".join(name if value is None else f"{name}={value}" for name, value in self.query)
        return text + (f"#{self.fragment}" if self.fragment is not None else "")

    def origin(self) -> str:
        return f"{self.scheme}//{self.host}".lower()

    def masked(self) -> _Url:
        return _Url(
            self.scheme,
            self.authority,
            MASK if self.user else self.user,
            MASK if self.password else self.password,
            self.host,
            self.path,
            None if self.query is None else [(n, MASK if v else v) for n, v in self.query],
            self.fragment,
        )

    def kept(self, stored: _Url | None, place: str) -> _Url:
        """This URL with its masked parts taken from ``stored``; raises ``NotKept`` for a part not stored."""

        def missing(what: str) -> NotKept:
            return NotKept(place, f"the URL's {what} is masked but no stored URL has one; give it")

        user, password = self.user, self.password
        if user == MASK:
            user = stored.user if stored is not None and stored.user else None
            if user is None:
                raise missing("user name")
        if password == MASK:
            password = stored.password if stored is not None and stored.password else None
            if password is None:
                raise missing("password")
        query = None if self.query is None else list(self.query)
        seen: dict[str, int] = {}
        for i, (name, value) in enumerate(query or []):
            occurrence = seen[name] = seen.get(name, -1) + 1
            if value != MASK:
                continue
            values = [v for n, v in (stored.query or []) if n == name] if stored is not None else []
            if occurrence >= len(values) or not values[occurrence]:
                raise missing(f"query parameter {name!r}")
            assert query is not None
            query[i] = (name, values[occurrence])
        return _Url(self.scheme, self.authority, user, password, self.host, self.path, query, self.fragment)
