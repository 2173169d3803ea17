"""A fake suspect: an OpenAI-compatible chat endpoint on 127.0.0.1 that answers with a toy student's samples."""

from __future__ import annotations

import threading
import time

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hydraguard.watermark.tokenizer import ModelTokenizer
from hydraguard.watermark.toymodel import BigramModel


def suspect_app(student: BigramModel, tokenizer: ModelTokenizer, *, seed: int) -> Starlette:
    rng = np.random.default_rng(seed)
    lock = threading.Lock()

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        with lock:
            ids = student.generate(1, min(int(body.get("max_tokens", 100)), 100), rng)[0]
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": tokenizer.decode(ids)},
                        "finish_reason": "length",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(ids), "total_tokens": 10 + len(ids)},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
