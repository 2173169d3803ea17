"""The closed-model radioactivity probe: query a suspect OpenAI-compatible API and test its outputs for our keys.

A student fine-tuned on watermarked outputs inherits a preference for their green tokens (Sander et al., NeurIPS
2024). Prompting the suspect and scoring its answers with the de-duplicated detector, against every key the
outputs could have come from, gives the p-value that its outputs are independent of our watermark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import openai

from hydraguard.watermark.detect import Attribution, attribute
from hydraguard.watermark.keys import WatermarkKey
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.tokenizer import ModelTokenizer

DEFAULT_PROMPTS = Path(__file__).with_name("probe_prompts.txt")


class ProbeError(Exception):
    pass


@dataclass(frozen=True)
class ProbeRequest:
    base_url: str  # e.g. http://suspect.example/v1
    model: str
    api_key: str = "unused"  # many self-hosted servers accept anything
    samples_per_prompt: int = 1
    max_tokens: int = 256
    temperature: float = 1.0  # sampling, as in the paper: greedy answers repeat and add few distinct k-grams
    timeout: float = 120.0


def read_prompts(path: Path = DEFAULT_PROMPTS) -> list[str]:
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ProbeError(f"{path} holds no prompts")
    return prompts


def collect_outputs(request: ProbeRequest, prompts: Sequence[str]) -> list[str]:
    """The suspect's answers: `samples_per_prompt` chat completions for each prompt (empty answers dropped)."""
    if request.samples_per_prompt < 1 or request.max_tokens < 1:
        raise ProbeError("samples per prompt and max tokens must be at least 1")
    client = openai.OpenAI(base_url=request.base_url, api_key=request.api_key, timeout=request.timeout)
    outputs: list[str] = []
    try:
        for prompt in prompts:
            for _ in range(request.samples_per_prompt):
                completion = client.chat.completions.create(
                    model=request.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                )
                outputs.extend(choice.message.content for choice in completion.choices if choice.message.content)
    except openai.OpenAIError as exc:
        raise ProbeError(f"the suspect API at {request.base_url} failed: {exc}") from exc
    finally:
        client.close()
    return outputs


def radioactivity(
    outputs: Sequence[str], tokenizer: ModelTokenizer, keys: Sequence[WatermarkKey], params: WatermarkParams
) -> Attribution:
    """Score all outputs together, each distinct k-gram once, against every key."""
    return attribute(keys, params, [tokenizer.encode(text) for text in outputs])
