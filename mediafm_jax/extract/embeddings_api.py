"""``--text-encoder openai:<model>``: an OpenAI-compatible embeddings endpoint.

The endpoint is ``$OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``) with the key
in ``$OPENAI_API_KEY``; any server speaking ``POST /embeddings`` works (vLLM, TEI, a
proxy). ``openai:<model>@<dims>`` asks for shortened vectors (the ``dimensions`` field).
Texts go in batches; 429 and 5xx answers and dropped connections are retried with
exponential back-off (``Retry-After`` honoured); a refused key, an unreachable host or a
spent retry budget is one line. The run checks the endpoint once before any video, and a
failure later fails only the video in progress: finished titles stay.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, ClassVar

import numpy as np

from mediafm_jax.errors import ExtractError
from mediafm_jax.extract import encoders

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KNOWN_DIMS = {
    "text-embedding-3-large": 3072,
    "text-embedding-3-small": 1536,
    "text-embedding-ada-002": 1536,
}
BATCH = 128
RETRIES = 5  # after the first try
BACKOFF_S, MAX_WAIT_S = 1.0, 30.0
TIMEOUT_S = 60.0


class EmbeddingsClient:
    """Batched, retried ``POST {base}/embeddings`` with one-line errors naming ``spec``."""

    def __init__(self, spec: str, model: str, dims: int | None) -> None:
        import httpx

        self.spec, self.model, self.dims = spec, model, dims
        self.base_url = os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL).rstrip("/")
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ExtractError(f"{spec}: OPENAI_API_KEY is not set (the endpoint's key)")
        self.http = httpx.Client(timeout=TIMEOUT_S, headers={"Authorization": f"Bearer {key}"})

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        for i in range(0, len(texts), BATCH):
            rows.append(self._request(texts[i : i + BATCH]))
        return np.concatenate(rows) if rows else np.zeros((0, self.dims or 0), np.float32)

    def _request(self, texts: list[str]) -> np.ndarray:
        import httpx

        url = f"{self.base_url}/embeddings"
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.dims is not None:
            body["dimensions"] = self.dims
        problem, problem_response = "", None
        for attempt in range(RETRIES + 1):
            if attempt:
                time.sleep(self._wait_s(attempt, problem_response))
            problem_response = None
            try:
                response = self.http.post(url, json=body)
            except httpx.TransportError as err:
                problem = f"cannot reach it ({type(err).__name__}: {err})"
                if isinstance(err, httpx.ConnectError):  # a wrong host or port: no retry helps
                    raise ExtractError(
                        f"{self.spec}: {url}: {problem}; set OPENAI_BASE_URL"
                    ) from None
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem, problem_response = _status(response), response
                continue
            if response.status_code in (401, 403):
                raise ExtractError(
                    f"{self.spec}: {url} refused the key in OPENAI_API_KEY ({_status(response)})"
                )
            if response.status_code != 200:
                raise ExtractError(f"{self.spec}: {url}: {_status(response)}")
            return self._vectors(response, len(texts), url)
        raise ExtractError(f"{self.spec}: {url}: {problem} after {RETRIES + 1} tries")

    @staticmethod
    def _wait_s(attempt: int, response: Any) -> float:
        if response is not None:
            try:
                return min(MAX_WAIT_S, max(0.0, float(response.headers["retry-after"])))
            except (KeyError, ValueError):
                pass
        return min(MAX_WAIT_S, BACKOFF_S * 2 ** (attempt - 1))

    def _vectors(self, response: Any, count: int, url: str) -> np.ndarray:
        try:
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            vectors_nd = np.array([d["embedding"] for d in data], np.float32)
        except (ValueError, KeyError, TypeError) as err:
            raise ExtractError(f"{self.spec}: {url}: not an embeddings answer ({err})") from None
        if vectors_nd.ndim != 2 or len(vectors_nd) != count:
            raise ExtractError(f"{self.spec}: {url}: {len(vectors_nd)} vectors for {count} texts")
        if not np.isfinite(vectors_nd).all():
            raise ExtractError(f"{self.spec}: {url}: returned non-finite numbers")
        return vectors_nd / (np.linalg.norm(vectors_nd, axis=1, keepdims=True) + 1e-8)


def _status(response: Any) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    message = " ".join(str(message).split())
    return f"HTTP {response.status_code}{f': {message}' if message else ''}"


class OpenAIEmbeddings(encoders.Encoder):
    """Text through the endpoint; unit-normed. Subclassed once per ``openai:<model>[@dims]``."""

    kind = "text"
    model: ClassVar[str]
    dims: ClassVar[int | None]

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        self.client = EmbeddingsClient(self.name, self.model, self.dims)

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors_nd = self.client.embed(texts)
        if vectors_nd.shape[1] != self.dim:
            raise ExtractError(
                f"{self.name}: the endpoint returned {vectors_nd.shape[1]}-d vectors, "
                f"expected {self.dim}"
            )
        return vectors_nd

    @classmethod
    def describe(cls) -> dict:
        """Checks the endpoint and key with one short request before any video starts."""
        client = EmbeddingsClient(cls.name, cls.model, cls.dims)
        probed = client.embed(["mediafm"]).shape[1]
        if probed != cls.dim:
            raise ExtractError(
                f"{cls.name}: the endpoint returns {probed}-d vectors, expected {cls.dim}"
            )
        return {
            "kind": cls.kind,
            "name": cls.name,
            "dim": cls.dim,
            "id": cls.model,
            "endpoint": client.base_url,
            "revision": None,
            "weights": None,
            "sha256": None,
        }


@functools.cache
def encoder_class(spec: str) -> type[OpenAIEmbeddings]:
    model, _, dims_text = spec.partition(":")[2].partition("@")
    if not model:
        raise ExtractError(f"--text-encoder {spec}: name a model after openai:")
    dims = None
    if dims_text:
        if not dims_text.isdigit() or int(dims_text) < 1:
            raise ExtractError(f"--text-encoder {spec}: @{dims_text} is not a dimension count")
        dims = int(dims_text)
    dim = dims or KNOWN_DIMS.get(model)
    if dim is None:  # an unknown model on a compatible server: ask it once
        dim = EmbeddingsClient(spec, model, None).embed(["mediafm"]).shape[1]
    attrs = {"name": spec, "dim": dim, "model": model, "dims": dims}
    return type("OpenAIEmbeddings_" + model.replace("-", "_"), (OpenAIEmbeddings,), attrs)
