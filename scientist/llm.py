"""The one door to LLMs: litellm, with budgets, retries, a transcript and a response cache.

Every provider litellm supports works: OpenAI and Anthropic by API key (from the
environment), and local servers (Ollama, vLLM, llama.cpp) through an OpenAI-compatible
base URL. `LLMClient.chat` sends one conversation and returns the reply text with its
token and cost counts. Around each call:

- budget: before a call, the run's spend so far is checked against `max_cost` (USD) and
  `max_tokens`; once either is used up, `BudgetExceeded` stops the run cleanly;
- faults: rate limits, timeouts, connection and server errors are retried with
  exponential backoff (honouring Retry-After); a provider that keeps failing, or one that
  refuses the request (bad key, unknown model), raises `ProviderError`;
- transcript: every request and reply (or error) is appended to
  `<run>/llm/transcript.jsonl`, and each call's counts go to the archive;
- cache: replies are stored under a hash of the request in `<run>/llm/cache/`, so a
  resumed run that asks the same thing again gets the stored answer and pays nothing.

API keys are read from the environment when a call is made. They are never written to
the run folder: config.json stores only the *name* of the variable that holds a key,
and every text written to the transcript, the archive or the console is redacted
(`scientist.redaction`) before it is serialised.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scientist.errors import BudgetExceeded, ScientistError
from scientist.redaction import SECRET_NAME, Redactor, redact, secret_values  # noqa: F401 (re-exported)

# litellm fetches its price table from GitHub at import unless told to use its bundled copy;
# there may be no internet, and a run should not depend on a remote file.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

LLM_DIR = "llm"
# environment variables litellm reads a base URL from, per provider
BASE_URL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE")


class ProviderError(ScientistError):
    """The LLM provider failed for good (after retries) or refused the request."""


@dataclass
class LLMSettings:
    """What the client needs from the run configuration."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key
    temperature: float = 0.7
    max_output_tokens: int = 4096
    timeout: float = 300.0  # seconds per request
    retries: int = 5  # retries per call on rate limits, timeouts and server errors
    backoff: float = 2.0  # first retry waits this long, then doubling, capped at 60 s
    max_cost: float | None = None  # USD for the whole run
    max_tokens: int | None = None  # prompt + completion tokens for the whole run
    price_in: float | None = None  # USD per million prompt tokens, if litellm has no price
    price_out: float | None = None  # USD per million completion tokens


@dataclass
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost: float  # USD; 0 for a cached reply (paid for before)
    cached: bool = False
    priced: bool = True  # False if the model's price is unknown (cost counted as 0)
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Usage:
    """Token and cost counts, summed over calls."""

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    unpriced_calls: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, r: Reply) -> None:
        self.calls += 1
        self.cached_calls += r.cached
        if not r.cached:
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens
            self.cost += r.cost
            self.unpriced_calls += not r.priced

    def __str__(self) -> str:
        if not self.calls:
            return "no LLM calls"
        cached = f", {self.cached_calls} from cache" if self.cached_calls else ""
        cost = f"${self.cost:.4f}" + (" + unpriced" if self.unpriced_calls else "")
        calls = f"{self.calls} call{'s' * (self.calls != 1)}"
        return f"{calls}{cached}, {short_count(self.tokens)} tokens, {cost}"


def short_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


# --- the client ------------------------------------------------------------------------


@dataclass
class LLMClient:
    """Chat completions through litellm for one run folder."""

    settings: LLMSettings
    run_dir: Path
    spent: Callable[[], Usage]  # the run's spend so far (from the archive)
    record: Callable[[dict[str, Any]], None]  # store one call's counts (in the archive)
    on_retry: Callable[[str], None] = lambda msg: None  # tell the user we are waiting
    sleep: Callable[[float], None] = time.sleep
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def folder(self) -> Path:
        return self.run_dir / LLM_DIR

    def describe(self) -> str:
        base = self.settings.api_base or next((os.environ[k] for k in BASE_URL_ENV if os.environ.get(k)),
                                              None)
        return f"{self.settings.model}" + (f" at {base}" if base else "")

    def check_budget(self) -> None:
        s, used = self.settings, self.spent()
        if s.max_cost is not None and used.cost >= s.max_cost:
            raise BudgetExceeded(f"LLM cost budget reached: ${used.cost:.4f} spent of --max-cost "
                                 f"${s.max_cost:g} ({used})")
        if s.max_tokens is not None and used.tokens >= s.max_tokens:
            raise BudgetExceeded(f"LLM token budget reached: {used.tokens:,} tokens used of "
                                 f"--max-tokens {s.max_tokens:,} ({used})")

    def request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        s = self.settings
        return {"model": s.model, "messages": messages, "temperature": s.temperature,
                "max_tokens": s.max_output_tokens}

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        """The cache key: a hash of what is sent (not of where, nor of the credentials)."""
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]

    def chat(self, messages: list[dict[str, str]], *, iteration: int, purpose: str) -> Reply:
        """One completion of `messages`; cached replies are returned without a call."""
        req = self.request(messages)
        key = self.key(req)
        cached = self._cached(key)
        if cached is not None:
            reply = Reply(**{**cached, "cost": 0.0, "cached": True, "seconds": 0.0})
            self._log(iteration, purpose, key, req, reply=reply)
            return reply
        self.check_budget()
        reply = self._call_with_retries(req, key, iteration, purpose)
        self._store(key, reply)
        self._log(iteration, purpose, key, req, reply=reply)
        return reply

    # --- calling ---------------------------------------------------------------------
    def _call_with_retries(self, req: dict[str, Any], key: str, iteration: int, purpose: str) -> Reply:
        import litellm

        s = self.settings
        attempt = 0
        while True:
            t0 = time.monotonic()
            try:
                return self._call(req, t0)
            except ProviderError:
                raise
            except Exception as e:
                message = redact(_describe(e), self._keys())
                self._log(iteration, purpose, key, req, error=message, attempt=attempt)
                fatal = not _retryable(e, litellm)
                if fatal or attempt >= s.retries:
                    why = "refused the request" if fatal else f"kept failing ({attempt + 1} attempts)"
                    raise ProviderError(f"LLM provider {why}: {message}") from None
                wait = min(60.0, max(_retry_after(e), s.backoff * 2 ** attempt))
                self.on_retry(f"LLM call failed ({message.splitlines()[0][:160]}); "
                              f"retry {attempt + 1} of {s.retries} in {wait:.1f} s")
                self.sleep(wait)
                attempt += 1

    def _call(self, req: dict[str, Any], t0: float) -> Reply:
        import litellm

        s = self.settings
        # drop_params: a model that refuses a setting (reasoning models and temperature) still answers
        kwargs: dict[str, Any] = dict(req, timeout=s.timeout, num_retries=0, max_retries=0, drop_params=True)
        if s.api_base:
            kwargs["api_base"] = s.api_base
        key = self._api_key()
        if key:
            kwargs["api_key"] = key
        elif s.api_base and not os.environ.get(_provider_key_env(s.model)):
            kwargs["api_key"] = "none"  # local servers ignore it, but clients insist on one
        response = litellm.completion(**kwargs)
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = getattr(response, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        cost, priced = self._price(pt, ct)
        return Reply(text=text, finish_reason=str(choice.finish_reason or ""), prompt_tokens=pt,
                     completion_tokens=ct, cost=cost, priced=priced,
                     seconds=time.monotonic() - t0)

    def _price(self, prompt_tokens: int, completion_tokens: int) -> tuple[float, bool]:
        s = self.settings
        if s.price_in is not None or s.price_out is not None:
            usd = (s.price_in or 0.0) * prompt_tokens + (s.price_out or 0.0) * completion_tokens
            return usd / 1e6, True
        import litellm

        try:
            pin, pout = litellm.cost_per_token(model=s.model, prompt_tokens=prompt_tokens,
                                               completion_tokens=completion_tokens)
            return float(pin + pout), True
        except Exception:  # a local or unlisted model: litellm has no price for it
            return 0.0, False

    def _api_key(self) -> str | None:
        name = self.settings.api_key_env
        if name:
            value = os.environ.get(name)
            if not value:
                raise ProviderError(f"the API key variable {name} (api_key_env) is not set")
            return value
        return os.environ.get("SCIENTIST_API_KEY") or None  # else litellm reads the provider's own

    def _redactor(self) -> Redactor:
        return Redactor.from_environment(self._keys())

    def _keys(self) -> tuple[str, ...]:
        try:
            key = self._api_key()
        except ProviderError:
            key = None
        return (key,) if key else ()

    # --- cache and transcript -----------------------------------------------------------
    def _cached(self, key: str) -> dict[str, Any] | None:
        path = self.folder / "cache" / f"{key}.json"
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        fields_ = {f for f in Reply.__dataclass_fields__}
        return {k: v for k, v in d.items() if k in fields_}

    def _store(self, key: str, reply: Reply) -> None:
        folder = self.folder / "cache"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.tmp"
        # redacted before it is serialised: a secret with a quote or a backslash would
        # not match its own JSON-escaped form
        tmp.write_text(json.dumps(self._redactor().obj(asdict(reply))))
        os.replace(tmp, folder / f"{key}.json")  # a kill never leaves half a cache entry

    def _log(self, iteration: int, purpose: str, key: str, req: dict[str, Any], *,
             reply: Reply | None = None, error: str | None = None, attempt: int = 0) -> None:
        entry: dict[str, Any] = {"at": time.time(), "iteration": iteration, "purpose": purpose,
                                 "key": key, "model": self.settings.model, "attempt": attempt}
        if reply is not None:
            entry.update(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                         cost=reply.cost, cached=reply.cached, priced=reply.priced,
                         seconds=round(reply.seconds, 3), finish_reason=reply.finish_reason)
        else:
            entry.update(error=error)
        with self._lock:
            self.record(entry)
            self.folder.mkdir(parents=True, exist_ok=True)
            line = json.dumps(self._redactor().obj({**entry, "request": req,
                                                    "reply": reply.text if reply else None}))
            with open(self.folder / "transcript.jsonl", "a") as f:
                f.write(line + "\n")


def _provider_key_env(model: str) -> str:
    """The variable litellm reads the key from for `model`'s provider (OpenAI-compatible default)."""
    provider = model.split("/", 1)[0].lower() if "/" in model else "openai"
    return {"anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
            "mistral": "MISTRAL_API_KEY"}.get(provider, "OPENAI_API_KEY")


def _retryable(e: BaseException, litellm: Any) -> bool:
    """Rate limits, timeouts, lost connections and 5xx are worth retrying; the rest is not."""
    fatal = (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError,
             litellm.BadRequestError)
    if isinstance(e, fatal):
        return False
    if isinstance(e, (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError,
                      litellm.InternalServerError, litellm.ServiceUnavailableError)):
        return True
    status = getattr(e, "status_code", None)
    if isinstance(status, int):
        return status == 408 or status == 429 or status >= 500
    # litellm.APIError without a status (e.g. a reply that is not valid JSON) and other
    # client-side errors on a response: try again, a later reply may be fine
    return isinstance(e, litellm.APIError) or isinstance(e, (ValueError, KeyError, AttributeError,
                                                             TypeError, IndexError))


def _retry_after(e: BaseException) -> float:
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return float(headers.get("retry-after", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def _describe(e: BaseException) -> str:
    status = getattr(e, "status_code", None)
    text = str(e).strip() or type(e).__name__
    text = re.sub(r"\s+", " ", text)
    if len(text) > 600:
        text = text[:600] + " …"
    return f"{type(e).__name__}" + (f" (HTTP {status})" if status else "") + f": {text}"
