"""Hand-written checks of parsed JSON, each failing with a 400 that names the offending field.

Shared by the protocol parsers so that every protocol words its errors the same way.
"""

from __future__ import annotations

from typing import Any, NoReturn

import orjson

from ..errors import ProtocolError
from ..models import ToolCall
from ..requests import (
    LARGE_BODY,
    UTF8_BOM,
    Request,
    header,
    loads,
    refuse_encoded,
    utf8_error,
)
from ..types import Scope


def invalid(param: str, message: str, status: int = 400) -> NoReturn:
    raise ProtocolError(status, message, param=param, code="invalid_value")


def parse_object(body: bytes, scope: Scope | None = None) -> dict[str, Any]:
    """The body as a JSON object. Any content type is accepted if the body is JSON.

    ``scope`` is only read when the body is refused, to name its Content-Type in the error.
    """
    if not body:
        raise _empty_body(scope)
    try:
        # In line for the usual small body: no call more on the hot path.
        data = orjson.loads(body) if len(body) < LARGE_BODY else loads(body)
    except orjson.JSONDecodeError as exc:
        if scope is not None:
            refuse_encoded(scope)
        not_utf8 = utf8_error(body)
        # One BOM before UTF-8: one level of recursion.
        if not_utf8 is None and body[:3] == UTF8_BOM and body[3:6] != UTF8_BOM:
            return parse_object(body[3:], scope)
        hint = ""
        content_type = header(scope, b"content-type") if scope is not None else None
        if content_type is not None:
            lowered = content_type.lower()
            if b"json" not in lowered or (not_utf8 and b"charset=" in lowered):
                hint = f" (Content-Type was {content_type.decode('latin-1')!r})"
        raise ProtocolError(
            400, f"The request body is not valid JSON{hint}: {not_utf8 or exc}", code="invalid_json"
        ) from None
    if type(data) is not dict:
        raise ProtocolError(
            400,
            f"The request body must be a JSON object, not {json_type(data)}.",
            code="invalid_json",
        )
    return data


def _empty_body(scope: Scope | None) -> ProtocolError:
    """The 400 for an empty body. One sent with an ``Upgrade`` header (Java's RestClient and
    Ktor offer ``Upgrade: h2c`` on every request) may never have arrived: uvicorn's httptools
    parser stops at such a header and passes no body on (uvicorn issue 2722), and what follows
    on the connection is misread (a body written later is taken for a request, a pipelined
    request is lost). The answer says so, and closes the connection."""
    message = "The request body is empty; send a JSON object."
    upgrade = header(scope, b"upgrade") if scope is not None else None
    if scope is None or upgrade is None or header(scope, b"content-length") == b"0":
        return ProtocolError(400, message)
    return ProtocolError(
        400, f"{message} The request offered 'Upgrade: {upgrade.decode('latin-1')}', after which"
        " uvicorn's httptools parser passes no body on (uvicorn issue 2722): send it without"
        " that header, or serve with uvicorn's --http h11.", headers=[(b"connection", b"close")],
    )  # fmt: skip


async def read_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 (413 past the body limit)."""
    return parse_object(await request.body(), request.scope)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def message_content(raw: dict[str, Any], where: str) -> str | list[dict[str, Any]] | None:
    """A message's ``content``: a string, null, or a list of typed parts (text parts hold text).

    The same rule in every protocol: OpenAI's and AG-UI 1.0's messages share this shape.
    """
    content = raw.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                invalid(at, f"'{at}' must be an object with a string 'type'.")
            text = part.get("text")
            if part["type"] == "text" and not isinstance(text, str):
                invalid(f"{at}.text", f"'{at}.text' must be a string, not {json_type(text)}.")
    elif content is not None and not isinstance(content, str):
        invalid(f"{where}.content", f"'{where}.content' must be a string, an array of parts or "
                                    f"null, not {json_type(content)}.")  # fmt: skip
    return content


def parse_tool_calls(raw: list[Any], where: str) -> list[ToolCall]:
    """A message's tool calls at ``where``: ``{id, function: {name, arguments}}`` items, the
    same in OpenAI and AG-UI 1.0. Arguments sent as JSON rather than a string are kept as text.

    OpenAI's custom tool calls, ``{id, type: "custom", custom: {name, input}}``, keep their type
    and carry ``input`` as the arguments."""
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(call, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(call)}.")
        custom = call.get("type") == "custom"
        key = "custom" if custom else "function"
        function = opt_object(call, key, f"{at}.{key}") or {}
        field = "input" if custom else "arguments"
        arguments = arguments_text(function.get(field, ""), f"{at}.{key}.{field}")
        calls.append(ToolCall(id=opt_str(call, "id", f"{at}.id") or "",
                              name=opt_str(function, "name", f"{at}.{key}.name") or "",
                              arguments=arguments, type=key))  # fmt: skip
    return calls


def arguments_text(arguments: Any, param: str) -> str:
    """A call's arguments (the parameter ``param``) as the JSON text the wire has; sent as JSON
    rather than a string, they are kept as that JSON's text."""
    if isinstance(arguments, str):
        return arguments
    try:
        return orjson.dumps(arguments).decode()
    except orjson.JSONEncodeError:
        too_deep(param)


def too_deep(param: str) -> NoReturn:
    """A 400 for a value the body parser took but orjson cannot write back: it reads 1024
    levels of nesting and writes 254, so a value the server re-encodes is refused here rather
    than failing as a 500."""
    invalid(param, f"'{param}' is nested too deeply (more than 254 levels).")


def shown(value: Any) -> str:
    """``value`` as JSON, for an error message; never an error of its own (see ``too_deep``)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json_type(value)


# Value checks: ``value`` (None allowed) of the named parameter, or a 400 naming it. The
# one-pass parsers call these on the fields a body has; ``opt_*`` look a key up first.


def string(param: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    invalid(param, f"'{param}' must be a string, not {json_type(value)}.")


def boolean(param: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    invalid(param, f"'{param}' must be a boolean, not {json_type(value)}.")


def number(param: str, value: Any) -> float | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    invalid(param, f"'{param}' must be a number, not {json_type(value)}.")


def integer(param: str, value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    invalid(param, f"'{param}' must be an integer, not {json_type(value)}.")


def obj(param: str, value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    invalid(param, f"'{param}' must be an object, not {json_type(value)}.")


def array(param: str, value: Any) -> list[Any] | None:
    if value is None or isinstance(value, list):
        return value
    invalid(param, f"'{param}' must be an array, not {json_type(value)}.")


def opt_str(data: dict[str, Any], key: str, param: str | None = None) -> str | None:
    return string(param or key, data.get(key))


def opt_bool(data: dict[str, Any], key: str, param: str | None = None) -> bool | None:
    return boolean(param or key, data.get(key))


def opt_number(data: dict[str, Any], key: str) -> float | None:
    return number(key, data.get(key))


def opt_int(data: dict[str, Any], key: str) -> int | None:
    return integer(key, data.get(key))


def opt_object(data: dict[str, Any], key: str, param: str | None = None) -> dict[str, Any] | None:
    return obj(param or key, data.get(key))


def opt_list(data: dict[str, Any], key: str, param: str | None = None) -> list[Any] | None:
    return array(param or key, data.get(key))
