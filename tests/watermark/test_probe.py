from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hydraguard.testing.servers import ThreadedServer
from hydraguard.watermark.cli import app
from hydraguard.watermark.keys import derive_key
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.probe import ProbeError, ProbeRequest, collect_outputs, read_prompts
from hydraguard.watermark.tokenizer import ModelTokenizer
from hydraguard.watermark.toymodel import BigramModel, whole_word_ids
from tests.watermark.conftest import MASTER, TOKENIZER_PATH
from tests.watermark.suspects import suspect_app

ACCOUNTS = [f"acct-{n}" for n in range(100)]
CULPRIT = "acct-17"
SECRET_ENV = "HG_TEST_WATERMARK_SECRET"


def _student(tokenizer: ModelTokenizer, watermarked: bool) -> BigramModel:
    """A student distilled from 400 teacher answers, watermarked with the culprit's key or not."""
    token_ids = whole_word_ids(tokenizer, 300)
    teacher = BigramModel.random(token_ids, seed=3)
    key = derive_key(MASTER, "account", CULPRIT)
    watermark = (key, WatermarkParams()) if watermarked else None
    return BigramModel.fit(token_ids, teacher.generate(400, 100, np.random.default_rng(4), watermark=watermark))


@pytest.fixture(scope="module")
def distilled_suspect(tokenizer: ModelTokenizer) -> Iterator[str]:
    with ThreadedServer(suspect_app(_student(tokenizer, watermarked=True), tokenizer, seed=5)) as server:
        yield server.url + "/v1"


@pytest.fixture(scope="module")
def innocent_suspect(tokenizer: ModelTokenizer) -> Iterator[str]:
    with ThreadedServer(suspect_app(_student(tokenizer, watermarked=False), tokenizer, seed=6)) as server:
        yield server.url + "/v1"


def _probe(url: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict[str, object]:
    monkeypatch.setenv(SECRET_ENV, MASTER.decode())
    result = CliRunner().invoke(
        app,
        [
            "probe", "--suspect", url, "--model", "student", "--tokenizer", str(TOKENIZER_PATH),
            "--secret-env", SECRET_ENV, "--accounts", ",".join(ACCOUNTS), "--samples", "2", "--max-tokens", "100",
            *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_probe_finds_the_account_whose_outputs_the_suspect_was_trained_on(
    distilled_suspect: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved = tmp_path / "outputs.jsonl"
    report = _probe(distilled_suspect, monkeypatch, "--save", str(saved))
    assert report["most_likely"] == f"account:{CULPRIT}"
    assert report["corrected_p"] < 1e-5
    assert report["keys_tested"] == 100
    assert report["outputs"] == 2 * len(read_prompts())
    assert len(saved.read_text().splitlines()) == report["outputs"]


def test_probe_clears_a_suspect_trained_on_unwatermarked_text(
    innocent_suspect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = _probe(innocent_suspect, monkeypatch)
    assert report["corrected_p"] > 0.01
    assert report["scored_kgrams"] > 1_000  # enough text was collected for the test to have had power


def test_probe_prompts_can_be_given(distilled_suspect: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\nWrite about rivers.\n\nWrite about mountains.\n")
    assert _probe(distilled_suspect, monkeypatch, "--prompts", str(prompts))["outputs"] == 4


def test_an_unreachable_suspect_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydraguard.testing.servers import free_port

    request = ProbeRequest(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", timeout=2.0)
    with pytest.raises(ProbeError, match="failed"):
        collect_outputs(request, ["hello"])


def test_nonsense_probe_settings_are_refused() -> None:
    with pytest.raises(ProbeError, match="at least 1"):
        collect_outputs(ProbeRequest(base_url="http://127.0.0.1:9/v1", model="m", samples_per_prompt=0), ["x"])
