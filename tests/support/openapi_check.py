"""Checks that a response conforms to the server's own OpenAPI document: the status is one the
operation declares, the media type is declared for that status, and a JSON body validates against
its schema (JSON Schema 2020-12, formats included). Test clients install it as an httpx event hook,
so every response an API test receives is checked.

    with httpx.Client(base_url=url, event_hooks=conformance_hooks(url)) as c: ...
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:gpupool:openapi"


class Nonconforming(AssertionError):
    """A response the OpenAPI document does not describe."""


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class OpenApiChecker:
    doc: dict
    _routes: list[tuple[re.Pattern, str]] = field(default_factory=list)
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict)
    checked: int = 0

    def __post_init__(self) -> None:
        self._registry = Registry().with_resource(
            DOC_URI, Resource.from_contents(self.doc, default_specification=DRAFT202012))
        templated = []
        for path in self.doc["paths"]:
            regex = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
            templated.append((path.count("{"), regex, path))
        self._routes = [(rx, p) for _, rx, p in sorted(templated, key=lambda t: t[0])]  # literal first

    def operation(self, method: str, raw_path: str) -> tuple[str, dict] | None:
        """(path template, operation) documented for this request, or None (not an API route)."""
        for regex, template in self._routes:
            if regex.match(raw_path):
                op = self.doc["paths"][template].get(method.lower())
                return (template, op) if op is not None else None
        return None

    def _validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            self._validators[pointer] = Draft202012Validator(
                {"$ref": f"{DOC_URI}#/{pointer}"}, registry=self._registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER)
        return self._validators[pointer]

    def check(self, method: str, raw_path: str, status: int, content_type: str | None,
              body: bytes | None) -> None:
        """Raise Nonconforming when the document does not describe this response."""
        found = self.operation(method, raw_path)
        if found is None:
            return
        template, op = found
        where = f"{method} {raw_path} -> {status}"
        key = str(status) if str(status) in op["responses"] else "default"
        if key not in op["responses"]:
            raise Nonconforming(f"{where}: status not declared for {method} {template} "
                                f"(declared: {sorted(op['responses'])}); body {body[:300] if body else b''!r}")
        content = op["responses"][key].get("content")
        if not content:
            if body:
                raise Nonconforming(f"{where}: a body where the document declares none")
            return
        media = (content_type or "").split(";")[0].strip()
        if media not in content:
            raise Nonconforming(f"{where}: media type {media!r}, declared {sorted(content)}")
        if body is None or not media.endswith("json") or "schema" not in content[media]:
            return
        import json

        try:
            value = json.loads(body)
        except ValueError as err:
            raise Nonconforming(f"{where}: body is not JSON ({err})") from None
        pointer = _pointer("paths", template, method.lower(), "responses", key, "content", media, "schema")
        errors = sorted(self._validator(pointer).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            raise Nonconforming(f"{where}: body does not match the schema at "
                                f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message[:300]}")
        self.checked += 1

    def check_response(self, response: httpx.Response) -> None:
        """The httpx form: reads JSON bodies (streamed text, such as followed logs, stays unread)."""
        media = response.headers.get("content-type", "")
        body = None
        if "json" in media or not media:
            response.read()
            body = response.content
        self.check(response.request.method, response.request.url.raw_path.decode().split("?")[0],
                   response.status_code, media or None, body)


_checkers: dict[str, OpenApiChecker] = {}
_lock = threading.Lock()


def checker_for(base_url: str, verify: object = True) -> OpenApiChecker:
    """The checker of the server at ``base_url`` (its /openapi.json, fetched once)."""
    with _lock:
        if base_url not in _checkers:
            doc = httpx.get(f"{base_url.rstrip('/')}/openapi.json", timeout=30.0,
                            verify=verify).raise_for_status().json()
            _checkers[base_url] = OpenApiChecker(doc)
        return _checkers[base_url]


def conformance_hooks(base_url: str, verify: object = True) -> dict[str, list]:
    """httpx ``event_hooks`` that check every response against the server's OpenAPI document."""
    return {"response": [lambda response: checker_for(base_url, verify).check_response(response)]}
