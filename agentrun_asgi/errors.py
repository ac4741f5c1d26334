"""The one exception that crosses from parsing and validation to the response layer."""

from __future__ import annotations

#: On a failed or timed-out agent run: the official OpenAI clients retry any 5xx twice by
#: default unless the server says not to with this (non-standard) header, and a retry runs the
#: whole agent again, its tool calls and model calls included, after the same wait.
NO_RETRY: list[tuple[bytes, bytes]] = [(b"x-should-retry", b"false")]


class ProtocolError(Exception):
    """A request the server refuses, with the status and the fields of an OpenAI-style error body.

    Raised anywhere below an endpoint before its response starts; the server renders it once,
    as ``{"error": {"message", "type", "param", "code"}}`` with ``status``.
    """

    __slots__ = ("code", "headers", "message", "param", "status", "type")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        Exception.__init__(self, message)  # not super(): a subclass may add a base of its own
        self.status = status
        self.message = message
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ClientDisconnect(Exception):
    """The client went away before its request body was read."""


class ResponseAborted(Exception):
    """Raised to the ASGI server when a response that had started cannot be finished.

    The server then drops the connection, so the client sees a cut-off body (an incomplete
    chunked read, a short Content-Length) instead of a shorter one that looks whole.
    """
