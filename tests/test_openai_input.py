"""The OpenAI body parser's shortcut for the usual body agrees with its general path.

``parse_chat_request`` takes a body of ``messages`` (plus ``model`` and ``stream``) without the
general field loop; any body, usual or not, must give what ``_parse_any`` gives: the same
request, or the same 400.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun_asgi.errors import ProtocolError
from agentrun_asgi.protocols.openai_input import (
    _messages,
    _parse_any,
    _parse_message,
    parse_chat_request,
)

odd = st.one_of(
    st.none(),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "bad"]),
            "content": st.one_of(st.text(max_size=5), odd),
        }
    ),
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "tool"]), "content": st.text(max_size=5)},
        optional={"name": st.one_of(st.text(max_size=3), odd), "tool_call_id": st.text(max_size=3)},
    ),
    odd,
)
body = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.one_of(st.lists(message, max_size=3), odd),
        "model": st.one_of(st.text(max_size=4), odd),
        "stream": st.one_of(st.booleans(), odd),
        "temperature": st.one_of(st.floats(0, 2), odd),
        "metadata": odd,
    },
)


def outcome(parse: Any, data: dict[str, Any]) -> Any:
    try:
        return parse(data)
    except ProtocolError as exc:
        return ("error", exc.status, exc.body())


@settings(max_examples=400, deadline=None)
@given(data=body)
def test_the_shortcut_and_the_general_path_agree(data: dict[str, Any]) -> None:
    assert outcome(lambda d: parse_chat_request(d, "dflt"), data) == outcome(
        lambda d: _parse_any(d, "dflt"), data
    )


def test_the_usual_body_takes_the_shortcut() -> None:
    data = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    request, usage = parse_chat_request(data)
    assert (request.model, request.stream, request.messages[0].text, usage) == (
        "m",
        True,
        "hi",
        False,
    )
    assert request.extra == {} and request.protocol == "openai"
    assert parse_chat_request({"messages": data["messages"], "model": ""})[0].model == "agentrun"


@settings(max_examples=400, deadline=None)
@given(raw=message)
def test_the_in_line_message_check_agrees_with_the_full_one(raw: Any) -> None:
    assert outcome(_messages, [raw]) == outcome(lambda r: [_parse_message(r[0], 0)], [raw])


def test_chat_request_builder_is_the_class_call() -> None:
    """The builder sets every field (an unset slot would make ``==`` raise) as the class would."""
    from dataclasses import fields

    from agentrun_asgi.models import AgentRequest, Message, MessageRole, chat_request

    messages = [Message(MessageRole.USER, "hi")]
    built = chat_request("openai", messages, "m", True)
    expected = AgentRequest("openai", messages, "m", True)
    assert type(built) is AgentRequest
    for field in fields(AgentRequest):
        assert getattr(built, field.name) == getattr(expected, field.name), field.name
    assert built == expected
    assert built.extra is not chat_request("openai", [], "m", False).extra
