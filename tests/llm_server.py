"""A local LLM service for tests: one HTTP server that speaks two protocols.

- OpenAI chat completions: POST /v1/chat/completions (also what Ollama, vLLM and
  llama.cpp serve), so a client pointed at http://127.0.0.1:PORT/v1 talks to it;
- Anthropic messages: POST /v1/messages, for a client pointed at http://127.0.0.1:PORT.

The real client path (litellm and the provider SDKs) talks to it over TCP. What it
answers comes from a script, a queue of actions consumed one per request, and when the
script is empty from a `brain`: a function of the request that returns the reply text.
Actions can also fail on purpose: an HTTP status with an error body (429 with
Retry-After, 500, 401), a slow reply, a body that is not JSON, a reply cut off at the
output limit. Every request is recorded with its headers for the test to inspect.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str
    truncated: bool = False  # finish_reason "length" / stop_reason "max_tokens"
    delay: float = 0.0  # seconds to wait before answering (a slow server)


@dataclass
class Status:
    code: int
    message: str = "injected failure"
    retry_after: float | None = None


@dataclass
class Garbage:
    body: bytes = b"<html>502 Bad Gateway from a proxy</html>"


Action = Reply | Status | Garbage


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def protocol(self) -> str:
        return "anthropic" if self.path.endswith("/messages") else "openai"

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation as role/content pairs, with the system prompt first (both protocols)."""
        out = []
        if self.protocol == "anthropic" and self.body.get("system"):
            system = self.body["system"]
            if isinstance(system, list):
                system = "".join(b.get("text", "") for b in system)
            out.append({"role": "system", "content": system})
        for m in self.body.get("messages", []):
            content = m.get("content", "")
            if isinstance(content, list):
                content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
            out.append({"role": m["role"], "content": content})
        return out

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    @property
    def first_user(self) -> str:
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")


@dataclass
class FakeLLM:
    brain: Callable[[Request], str | Reply] = lambda req: "no brain configured"
    script: deque = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                n = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(req)
                    action = fake.script.popleft() if fake.script else None
                if action is None:  # a brain answers with text, or with a Reply (cut off, slow)
                    action = fake.brain(req)
                    action = action if isinstance(action, Reply) else Reply(action)
                fake._answer(self, req, action)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def openai_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def queue(self, *actions: Action) -> FakeLLM:
        self.script.extend(actions)
        return self

    # --- answering --------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler, req: Request, action: Action) -> None:
        if isinstance(action, Garbage):
            return _send(h, 200, action.body, "text/html")
        if isinstance(action, Status):
            headers = {"retry-after": str(action.retry_after)} if action.retry_after is not None else {}
            return _send(h, action.code, json.dumps(_error(req, action)).encode(), headers=headers)
        if action.delay:
            time.sleep(action.delay)
        prompt_tokens = sum(len(m["content"]) for m in req.messages) // 4 + 1
        completion_tokens = len(action.text) // 4 + 1
        if req.protocol == "anthropic":
            out = {"id": f"msg_{len(self.requests)}", "type": "message", "role": "assistant",
                   "model": req.body.get("model", "?"), "content": [{"type": "text", "text": action.text}],
                   "stop_reason": "max_tokens" if action.truncated else "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}}
        else:
            out = {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
                   "created": int(time.time()), "model": req.body.get("model", "?"),
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": action.text},
                                "finish_reason": "length" if action.truncated else "stop"}],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}}
        _send(h, 200, json.dumps(out).encode())


def _error(req: Request, s: Status) -> dict[str, Any]:
    kind = {401: "authentication_error", 429: "rate_limit_error", 400: "invalid_request_error"}.get(
        s.code, "api_error")
    if req.protocol == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": s.message}}
    return {"error": {"message": s.message, "type": kind, "code": str(s.code)}}


def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "application/json",
          headers: dict[str, str] | None = None) -> None:
    try:
        h.send_response(code)
        h.send_header("content-type", ctype)
        h.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
        pass


def reply(hypothesis: str, edits: str, prediction: str = "+0.1", rationale: str = "Because.") -> str:
    """A well-formed scientist reply."""
    return (f"## Hypothesis\n{hypothesis}\n\n## Rationale\n{rationale}\n\n## Prediction\n{prediction}\n\n"
            f"## Edits\n{edits}")


def block(path: str, search: str, replace: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"
