from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hydraguard.watermark.cli import app
from hydraguard.watermark.keys import derive_key
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.tokenizer import ModelTokenizer
from hydraguard.watermark.toymodel import BigramModel
from tests.watermark.conftest import MASTER, TOKENIZER_PATH

SECRET_ENV = "HG_TEST_WATERMARK_SECRET"


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.txt"
    path.write_text("# suspects\n" + "\n".join(f"acct-{n}" for n in range(200)) + "\n")
    return path


def _text_file(tmp_path: Path, tokenizer: ModelTokenizer, toy_model: BigramModel, account: str | None) -> Path:
    watermark = (derive_key(MASTER, "account", account), WatermarkParams()) if account else None
    ids = toy_model.generate(1, 200, np.random.default_rng(21), watermark=watermark)[0]
    path = tmp_path / "leak.txt"
    path.write_text(tokenizer.decode(ids))
    return path


def _detect(monkeypatch: pytest.MonkeyPatch, *args: str, secret: str | None = MASTER.decode()):  # type: ignore[no-untyped-def]
    if secret is None:
        monkeypatch.delenv(SECRET_ENV, raising=False)
    else:
        monkeypatch.setenv(SECRET_ENV, secret)
    return CliRunner().invoke(app, ["detect", *args, "--secret-env", SECRET_ENV])


def test_detect_names_the_leaking_account(
    tmp_path: Path,
    tokenizer: ModelTokenizer,
    toy_model: BigramModel,
    accounts_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leak = _text_file(tmp_path, tokenizer, toy_model, "acct-123")
    result = _detect(monkeypatch, str(leak), "--tokenizer", str(TOKENIZER_PATH), "--accounts", str(accounts_file))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["most_likely"] == "account:acct-123"
    assert report["keys_tested"] == 200
    assert report["z"] > 4
    assert report["corrected_p"] < 1e-6
    assert MASTER.decode() not in result.output


def test_detect_clears_unwatermarked_text(
    tmp_path: Path, tokenizer: ModelTokenizer, toy_model: BigramModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _text_file(tmp_path, tokenizer, toy_model, None)
    ids = "acct-1,acct-2,acct-3"
    result = _detect(monkeypatch, str(text), "--tokenizer", str(TOKENIZER_PATH), "--accounts", ids)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["keys_tested"] == 3
    assert report["corrected_p"] > 0.01
    assert report["corrected_p"] >= report["p"]


def test_detect_by_cluster_uses_cluster_keys(
    tmp_path: Path, tokenizer: ModelTokenizer, toy_model: BigramModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    leak = _text_file(tmp_path, tokenizer, toy_model, "c9")  # an account key, not cluster c9's
    common = [str(leak), "--tokenizer", str(TOKENIZER_PATH), "--accounts", "c8,c9"]
    as_accounts = json.loads(_detect(monkeypatch, *common).stdout)
    as_clusters = json.loads(_detect(monkeypatch, *common, "--scope", "cluster").stdout)
    assert as_accounts["most_likely"] == "account:c9"
    assert as_accounts["corrected_p"] < 1e-6
    assert as_clusters["corrected_p"] > 0.01


@pytest.mark.parametrize(
    ("args", "secret", "message"),
    [
        ([], None, f"{SECRET_ENV} is not set"),
        ([], "short", "at least 16 bytes"),
        (["--scope", "org"], MASTER.decode(), "--scope must be one of"),
        (["--gamma", "1.5"], MASTER.decode(), "gamma must be in"),
        (["--context-width", "0"], MASTER.decode(), "context_width must be"),
        (["--tokenizer", "/nonexistent/tokenizer.json"], MASTER.decode(), "does not exist"),
        (["--accounts", " , "], MASTER.decode(), "no account or cluster ids"),
        (["--accounts", "a,a"], MASTER.decode(), "duplicate"),
    ],
)
def test_bad_input_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], secret: str | None, message: str
) -> None:
    text = tmp_path / "t.txt"
    text.write_text("some text to test")
    defaults = {"--tokenizer": str(TOKENIZER_PATH), "--accounts": "a,b"}
    for option, value in defaults.items():
        if option not in args:
            args = [*args, option, value]
    result = _detect(monkeypatch, str(text), *args, secret=secret)
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_unreadable_text_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    args = ["--tokenizer", str(TOKENIZER_PATH), "--accounts", "a"]
    for path in (binary, tmp_path / "missing.txt"):
        result = _detect(monkeypatch, str(path), *args)
        assert result.exit_code == 2
        assert "cannot read" in result.stderr
