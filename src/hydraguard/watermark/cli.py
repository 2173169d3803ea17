"""`hydraguard watermark ...`: detect the watermark in text, and probe a suspect model for it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from hydraguard.watermark.detect import Attribution, attribute
from hydraguard.watermark.keys import SCOPE_KINDS, ScopeKind, WatermarkKey, derive_keys
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.tokenizer import ModelTokenizer

app = typer.Typer(help="Output watermarks: detect them in text, probe a suspect model for them.", no_args_is_help=True)

TokenizerOption = Annotated[
    Path, typer.Option(help="The generating model's tokenizer.json: the watermark lives on its token ids.")
]
SecretEnvOption = Annotated[
    str, typer.Option(help="Environment variable holding the watermark master secret (never pass it as an argument).")
]
AccountsOption = Annotated[str, typer.Option(help="Ids to test: a file with one id a line, or a comma-separated list.")]
ScopeOption = Annotated[str, typer.Option(help="Whether the ids are accounts or clusters: account | cluster.")]
ContextWidthOption = Annotated[int, typer.Option(help="h: previous tokens seeding the green list, as generated.")]
GammaOption = Annotated[float, typer.Option(help="Green fraction, as generated.")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _is_file(candidate: str) -> bool:
    try:
        return Path(candidate).is_file()
    except OSError:  # e.g. a long id list is too long to be a file name
        return False


def _scope_ids(accounts: str) -> list[str]:
    if _is_file(accounts):
        lines = Path(accounts).read_text().splitlines()
        ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        ids = [part.strip() for part in accounts.split(",") if part.strip()]
    if not ids:
        _fail(f"no account or cluster ids in {accounts!r}")
    if len(set(ids)) != len(ids):
        _fail(f"duplicate ids in {accounts!r}")
    return ids


def _keys(secret_env: str, accounts: str, scope: str) -> list[WatermarkKey]:
    secret = os.environ.get(secret_env)
    if not secret:
        _fail(f"environment variable {secret_env} is not set: it must hold the watermark master secret")
    if scope not in SCOPE_KINDS:
        _fail(f"--scope must be one of {', '.join(SCOPE_KINDS)}, got {scope!r}")
    kind: ScopeKind = "account" if scope == "account" else "cluster"
    try:
        return derive_keys(secret.encode(), kind, _scope_ids(accounts))
    except ValueError as exc:
        _fail(str(exc))


def _setup(
    tokenizer: Path, secret_env: str, accounts: str, scope: str, context_width: int, gamma: float
) -> tuple[ModelTokenizer, list[WatermarkKey], WatermarkParams]:
    try:
        params = WatermarkParams(context_width=context_width, gamma=gamma)
        model_tokenizer = ModelTokenizer(tokenizer)
    except ValueError as exc:
        _fail(str(exc))
    return model_tokenizer, _keys(secret_env, accounts, scope), params


def _report(result: Attribution, **extra: Any) -> None:
    report = {
        "z": result.score.z,
        "p": result.score.p,
        "corrected_p": result.corrected_p,
        "most_likely": result.scope,
        "keys_tested": result.keys_tested,
        "scored_kgrams": result.score.scored,
        "green_kgrams": result.score.green,
        **extra,
    }
    typer.echo(msgspec.json.encode(report).decode())


@app.command()
def detect(
    file: Annotated[Path, typer.Argument(help="A UTF-8 text file suspected to hold watermarked output.")],
    tokenizer: TokenizerOption,
    accounts: AccountsOption,
    secret_env: SecretEnvOption = "HYDRAGUARD_WATERMARK_SECRET",
    scope: ScopeOption = "account",
    context_width: ContextWidthOption = 1,
    gamma: GammaOption = 0.25,
) -> None:
    """Test a text against every account's (or cluster's) key: z, p, corrected p, most likely account."""
    model_tokenizer, keys, params = _setup(tokenizer, secret_env, accounts, scope, context_width, gamma)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {file}: {exc}")
    _report(attribute(keys, params, [model_tokenizer.encode(text)]))


@app.command()
def probe(
    suspect: Annotated[str, typer.Option(help="The suspect's OpenAI-compatible base URL, e.g. http://host/v1.")],
    model: Annotated[str, typer.Option(help="The model name to request from the suspect.")],
    tokenizer: TokenizerOption,
    accounts: AccountsOption,
    secret_env: SecretEnvOption = "HYDRAGUARD_WATERMARK_SECRET",
    scope: ScopeOption = "account",
    context_width: ContextWidthOption = 1,
    gamma: GammaOption = 0.25,
    prompts: Annotated[Path | None, typer.Option(help="Probe prompts, one a line (default: the shipped set).")] = None,
    samples: Annotated[int, typer.Option(help="Completions per prompt.")] = 4,
    max_tokens: Annotated[int, typer.Option()] = 256,
    temperature: Annotated[float, typer.Option()] = 1.0,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable with the suspect's API key.")] = None,
    save: Annotated[Path | None, typer.Option(help="Also write the collected outputs here (JSON lines).")] = None,
) -> None:
    """Query a suspect model and report the p-value that it learned from our watermarked outputs."""
    from hydraguard.watermark import probe as probing  # the openai client is only needed here

    model_tokenizer, keys, params = _setup(tokenizer, secret_env, accounts, scope, context_width, gamma)
    api_key = os.environ.get(api_key_env, "") if api_key_env else ""
    request = probing.ProbeRequest(
        base_url=suspect,
        model=model,
        api_key=api_key or "unused",
        samples_per_prompt=samples,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    try:
        prompt_list = probing.read_prompts(prompts) if prompts else probing.read_prompts()
        outputs = probing.collect_outputs(request, prompt_list)
    except (probing.ProbeError, OSError) as exc:
        _fail(str(exc))
    if save is not None:
        save.write_bytes(b"".join(msgspec.json.encode({"output": text}) + b"\n" for text in outputs))
    _report(probing.radioactivity(outputs, model_tokenizer, keys, params), outputs=len(outputs))
