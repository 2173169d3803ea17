"""The `hydraguard` command line, run in a temporary directory with its own config."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hydraguard import config as config_module
from hydraguard.accounts import keys
from hydraguard.accounts.registry import Registry
from hydraguard.cli import app
from hydraguard.decide.store import SqlDecisionStore
from hydraguard.events.log import EventLog
from hydraguard.events.schema import RequestEvent

FULL_KEY_COMMANDS = {("keys", "issue"), ("keys", "rotate")}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HYDRAGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@dataclass
class Cli:
    config: Path
    runner: CliRunner = field(default_factory=CliRunner)
    transcript: list[tuple[tuple[str, ...], str]] = field(default_factory=list)

    def __call__(self, *args: str, expect: int = 0, config: bool = True):  # type: ignore[no-untyped-def]
        argv = (["--config", str(self.config)] if config else []) + list(args)
        result = self.runner.invoke(app, argv)
        self.transcript.append((tuple(args[:2]), result.output))
        assert result.exit_code == expect, (argv, result.output, result.exception)
        return result

    def json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self(*args).stdout)

    def json_lines(self, *args: str) -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(line) for line in self(*args).stdout.splitlines() if line.strip()]

    def settings(self) -> config_module.Settings:
        return config_module.load(self.config)

    def registry(self) -> Registry:
        """A registry that sees the CLI's changes at once (a gateway sees them within 0.1 s)."""
        settings = self.settings()
        return Registry(settings.registry.url, settings.secret_bytes(), change_check_interval=0.0)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(tmp_path / "hydraguard.toml")])
    assert result.exit_code == 0, result.output
    yield Cli(tmp_path / "hydraguard.toml", runner)


def _org_and_account(cli: Cli, tier: str = "free") -> tuple[str, str]:
    org = cli.json("orgs", "create", "acme", "--tier", tier)
    account = cli.json("accounts", "create", "--org", org["id"], "--tier", tier)
    return org["id"], account["id"]


# -- init ---------------------------------------------------------------------------------------------------
def test_init_writes_private_config_with_fresh_secret(tmp_path):
    runner = CliRunner()
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    result = runner.invoke(app, ["init", str(first)])
    assert result.exit_code == 0, result.output
    assert str(first) in result.output
    assert runner.invoke(app, ["init", str(second)]).exit_code == 0
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    secrets_ = [tomllib.loads(p.read_text())["server"]["secret"] for p in (first, second)]
    assert all(len(s) >= 32 and "@" not in s for s in secrets_)
    assert secrets_[0] != secrets_[1]
    assert secrets_[0] not in result.output  # the secret is not echoed
    assert config_module.load(first).server.secret == secrets_[0]


def test_init_default_path_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    target = tmp_path / "hydraguard.toml"
    original = target.read_text()
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 2
    assert "not overwriting" in again.output and "error:" in again.stderr
    assert target.read_text() == original
    # the default config is found without --config
    assert runner.invoke(app, ["orgs", "create", "x"]).exit_code == 0
    assert (tmp_path / "hydraguard-data" / "registry.db").exists()


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "missing.toml"), "orgs", "list"])
    assert result.exit_code == 2
    assert "missing.toml does not exist" in result.stderr
    assert "Traceback" not in result.output


def test_invalid_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = -1\nsecret = "s"\n')
    result = CliRunner().invoke(app, ["--config", str(bad), "orgs", "list"])
    assert result.exit_code == 2
    assert "invalid configuration" in result.stderr and "port" in result.stderr


def test_config_without_secret_is_a_clear_error(tmp_path):
    empty = tmp_path / "nosecret.toml"
    empty.write_text("[server]\nport = 9000\n")
    result = CliRunner().invoke(app, ["--config", str(empty), "orgs", "list"])
    assert result.exit_code == 2
    assert "no server secret" in result.stderr


# -- orgs and accounts ----------------------------------------------------------------------------------------
def test_orgs_create_and_list(cli):
    a = cli.json("orgs", "create", "acme")
    b = cli.json("orgs", "create", "globex", "--tier", "enterprise")
    assert a["name"] == "acme" and a["tier"] == "free" and a["id"].startswith("org_")
    assert b["tier"] == "enterprise"
    listed = cli.json_lines("orgs", "list")
    assert [o["id"] for o in listed] == [a["id"], b["id"]]


def test_unknown_tier_is_a_clear_error(cli):
    result = cli("orgs", "create", "x", "--tier", "gold", expect=2)
    assert "unknown tier 'gold'" in result.stderr and "free" in result.stderr
    org = cli.json("orgs", "create", "x")
    result = cli("accounts", "create", "--org", org["id"], "--tier", "platinum", expect=2)
    assert "unknown tier 'platinum'" in result.stderr
    assert cli.json_lines("accounts", "list") == []


def test_accounts_create_list_and_set(cli):
    org = cli.json("orgs", "create", "acme", "--tier", "standard")
    account = cli.json(
        "accounts",
        "create",
        "--org",
        org["id"],
        "--tier",
        "standard",
        "--email-domain",
        "Example.ORG",
        "--signup-ip",
        "2001:DB8::0:1",
        "--payment-method",
        "pm_raw_card_4242",
    )
    assert account["org_id"] == org["id"] and account["tier"] == "standard" and account["status"] == "active"
    assert account["email_domain"] == "example.org" and account["signup_ip"] == "2001:db8::1"
    assert account["payment_fingerprint"] and "pm_raw_card_4242" not in json.dumps(account)
    other_org = cli.json("orgs", "create", "other")
    other = cli.json("accounts", "create", "--org", other_org["id"])

    assert [a["id"] for a in cli.json_lines("accounts", "list")] == [account["id"], other["id"]]
    assert [a["id"] for a in cli.json_lines("accounts", "list", "--org", org["id"])] == [account["id"]]

    updated = cli.json("accounts", "set", account["id"], "--status", "suspended")
    assert updated["status"] == "suspended" and updated["limit_overrides"] is None
    updated = cli.json("accounts", "set", account["id"], "--rpm", "10", "--concurrency", "2")
    assert updated["limit_overrides"] == {"rpm": 10, "concurrency": 2}
    updated = cli.json("accounts", "set", account["id"], "--tpm", "500", "--tier", "enterprise")
    assert updated["limit_overrides"] == {"rpm": 10, "tpm": 500, "concurrency": 2}  # merged, not replaced
    assert updated["tier"] == "enterprise" and updated["status"] == "suspended"
    updated = cli.json("accounts", "set", account["id"], "--clear-overrides", "--status", "active")
    assert updated["limit_overrides"] is None and updated["status"] == "active"

    registry = cli.registry()
    try:
        stored = registry.get_account(account["id"])
        assert stored.tier == "enterprise" and stored.limit_overrides is None
    finally:
        registry.close()


def test_accounts_errors(cli):
    org = cli.json("orgs", "create", "acme")
    result = cli("accounts", "create", "--org", org["id"], "--signup-ip", "999.0.0.1", expect=2)
    assert "not an IP address" in result.stderr
    result = cli("accounts", "create", "--org", "org_nope", expect=2)
    assert "org_nope" in result.stderr
    result = cli("accounts", "set", "acct_nope", "--status", "banned", expect=2)
    assert "acct_nope" in result.stderr
    result = cli("accounts", "set", "acct_nope", "--rpm", "5", expect=2)
    assert "acct_nope" in result.stderr
    cli("accounts", "set", "acct_nope", "--status", "weird", expect=2)
    cli("accounts", "set", "acct_nope", "--rpm", "0", expect=2)
    result = cli("accounts", "set", "acct_nope", "--tier", "gold", expect=2)
    assert "unknown tier" in result.stderr
    assert cli.json_lines("accounts", "list") == []


# -- keys -----------------------------------------------------------------------------------------------------
def test_keys_issue_list_rotate_revoke(cli):
    _, account_id = _org_and_account(cli)
    issued = cli("keys", "issue", account_id)
    record = json.loads(issued.stdout)
    plaintext = record["key"]
    assert keys.well_formed(plaintext)
    assert issued.stdout.count(plaintext) == 1  # printed once
    assert record["account_id"] == account_id and record["hint"] == keys.hint(plaintext)

    listing = cli("keys", "list")
    assert plaintext not in listing.stdout
    (listed,) = [json.loads(line) for line in listing.stdout.splitlines()]
    assert "key" not in listed and "key_hash" not in listed
    assert listed["id"] == record["id"] and listed["hint"] == keys.hint(plaintext)
    assert cli.json_lines("keys", "list", "--account", account_id) == [listed]
    assert cli.json_lines("keys", "list", "--account", "acct_other") == []

    registry = cli.registry()
    try:
        assert registry.authenticate(plaintext).key.id == record["id"]

        # rotate with grace: both work, the old one until expires_at
        rotated = cli.json("keys", "rotate", record["id"], "--grace", "300")
        assert rotated["replaces"] == record["id"] and rotated["key"] != plaintext
        assert keys.well_formed(rotated["key"])
        assert registry.authenticate(plaintext) is not None
        assert registry.authenticate(rotated["key"]).key.id == rotated["id"]
        old = registry.get_key(record["id"])
        assert old.revoked_at is None and old.expires_at is not None
        assert time.time() + 250 < old.expires_at <= time.time() + 300

        # rotate immediately: the replaced key stops working at once
        again = cli.json("keys", "rotate", rotated["id"])
        assert registry.authenticate(rotated["key"]) is None
        assert registry.authenticate(again["key"]) is not None

        revoked = cli.json("keys", "revoke", again["id"])
        assert revoked["revoked_at"] is not None and "key" not in revoked
        assert registry.authenticate(again["key"]) is None

        listing = cli("keys", "list", "--account", account_id).stdout
        for full in (plaintext, rotated["key"], again["key"]):
            assert full not in listing
        assert len(listing.splitlines()) == 3
    finally:
        registry.close()

    result = cli("keys", "rotate", again["id"], expect=2)
    assert "cannot be rotated" in result.stderr
    assert "key_nope" in cli("keys", "revoke", "key_nope", expect=2).stderr
    assert "key_nope" in cli("keys", "rotate", "key_nope", expect=2).stderr
    assert "acct_nope" in cli("keys", "issue", "acct_nope", expect=2).stderr
    cli("keys", "rotate", record["id"], "--grace", "-1", expect=2)


# -- decisions ------------------------------------------------------------------------------------------------
def test_decisions_add_list_remove(cli):
    block = cli.json(
        "decisions", "add", "--type", "block", "--scope", "ip", "--value", "10.0.0.0/8", "--reason", "abuse"
    )
    assert block["type"] == "block" and block["scope"] == "ip" and block["value"] == "10.0.0.0/8"
    assert block["source"] == "cli" and block["expires_at"] is None and block["limits"] is None
    throttle = cli.json(
        "decisions",
        "add",
        "--type",
        "throttle",
        "--scope",
        "account",
        "--value",
        "acct_x",
        "--reason",
        "suspicious",
        "--rpm",
        "5",
        "--tpm",
        "1000",
        "--ttl",
        "600",
    )
    assert throttle["limits"] == {"rpm": 5, "tpm": 1000}
    assert time.time() + 500 < throttle["expires_at"] <= time.time() + 600

    listed = cli.json_lines("decisions", "list")
    assert [d["id"] for d in listed] == [block["id"], throttle["id"]]

    removed = cli("decisions", "remove", block["id"])
    assert block["id"] in removed.stdout
    assert [d["id"] for d in cli.json_lines("decisions", "list")] == [throttle["id"]]
    result = cli("decisions", "remove", block["id"], expect=2)
    assert "no decision" in result.stderr

    # the gateway's store sees what the CLI wrote
    settings = cli.settings()
    registry = cli.registry()
    try:
        store = SqlDecisionStore(registry.engine)
        asyncio.run(store.refresh(force=True))
        assert [d.id for d in store.match(key_id=None, account_id="acct_x", ip=None)] == [throttle["id"]]
        assert store.match(key_id=None, account_id=None, ip="10.1.2.3") == []
    finally:
        registry.close()
    assert settings.backend.kind == "memory"


def test_decisions_errors(cli):
    result = cli(
        "decisions", "add", "--type", "block", "--scope", "ip", "--value", "10.0.0.300", "--reason", "x", expect=2
    )
    assert "error:" in result.stderr and "10.0.0.300" in result.stderr
    assert "Traceback" not in result.output
    result = cli(
        "decisions", "add", "--type", "throttle", "--scope", "key", "--value", "key_1", "--reason", "x", expect=2
    )
    assert "throttle decision needs reduced limits" in result.stderr
    cli("decisions", "add", "--type", "nuke", "--scope", "key", "--value", "key_1", "--reason", "x", expect=2)
    cli("decisions", "add", "--type", "block", "--scope", "planet", "--value", "key_1", "--reason", "x", expect=2)
    cli(
        "decisions",
        "add",
        "--type",
        "throttle",
        "--scope",
        "key",
        "--value",
        "k",
        "--reason",
        "x",
        "--rpm",
        "0",
        expect=2,
    )
    assert cli.json_lines("decisions", "list") == []


def test_decisions_group(cli):
    result = cli("decisions", "group", "grp_ring", "acct_a", "acct_b", "acct_c")
    assert "grp_ring: 3 accounts" in result.stdout
    block = cli.json(
        "decisions", "add", "--type", "block", "--scope", "group", "--value", "grp_ring", "--reason", "ring"
    )
    registry = cli.registry()
    try:
        store = SqlDecisionStore(registry.engine)
        asyncio.run(store.refresh(force=True))
        assert store.groups_of("acct_b") == {"grp_ring"}
        assert store.groups_of("acct_z") == frozenset()
        assert [d.id for d in store.match(key_id=None, account_id="acct_c", ip=None)] == [block["id"]]
    finally:
        registry.close()
    # regrouping replaces the membership
    cli("decisions", "group", "grp_ring", "acct_a")
    registry = cli.registry()
    try:
        store = SqlDecisionStore(registry.engine)
        asyncio.run(store.refresh(force=True))
        assert store.groups_of("acct_b") == frozenset() and store.groups_of("acct_a") == {"grp_ring"}
    finally:
        registry.close()


# -- events ---------------------------------------------------------------------------------------------------
def _write_events(cli: Cli, n: int) -> list[RequestEvent]:
    events = [
        RequestEvent(time=1_700_000_000.0 + i, request_id=f"req-{i}", endpoint="/v1/chat/completions", status=200)
        for i in range(n)
    ]
    directory = cli.settings().events.dir
    for half in (events[1::2], events[::2]):  # two segments, out of time order on disk
        log = EventLog(directory)
        for e in half:
            log.append(e)
        log.close()
    return events


def test_events_tail_and_export(cli, tmp_path):
    assert cli("events", "tail").stdout == ""  # no events yet
    _write_events(cli, 7)
    tail = cli.json_lines("events", "tail", "-n", "3")
    assert [e["request_id"] for e in tail] == ["req-4", "req-5", "req-6"]
    assert tail[0]["endpoint"] == "/v1/chat/completions" and tail[0]["status"] == 200
    assert len(cli.json_lines("events", "tail")) == 7
    cli("events", "tail", "-n", "0", expect=2)

    out = tmp_path / "export.parquet"
    result = cli("events", "export", "--out", str(out), "--format", "parquet")
    assert "exported 7 events" in result.stdout
    table = pq.read_table(out)
    assert table.num_rows == 7
    assert table.column("request_id").to_pylist() == [f"req-{i}" for i in range(7)]
    result = cli("events", "export", "--out", str(tmp_path / "x.csv"), "--format", "csv", expect=2)
    assert "unsupported format" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_events_dir_from_environment(cli, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    monkeypatch.setenv("HYDRAGUARD_EVENTS__DIR", str(other))
    _write_events(cli, 2)
    assert (other).is_dir() and any(other.iterdir())
    assert len(cli.json_lines("events", "tail")) == 2


# -- secrets never leak ---------------------------------------------------------------------------------------
def test_no_output_log_or_file_holds_a_full_key_except_issue_and_rotate(cli, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    _, account_id = _org_and_account(cli, "standard")
    full_keys = []
    first = cli.json("keys", "issue", account_id)
    second = cli.json("keys", "issue", account_id)
    full_keys += [first["key"], second["key"]]
    full_keys.append(cli.json("keys", "rotate", first["id"], "--grace", "60")["key"])
    full_keys.append(cli.json("keys", "rotate", second["id"])["key"])
    cli("keys", "list")
    cli("keys", "list", "--account", account_id)
    cli("keys", "revoke", first["id"])
    cli("accounts", "list")
    cli("accounts", "set", account_id, "--rpm", "7")
    cli("orgs", "list")
    cli("decisions", "add", "--type", "block", "--scope", "key", "--value", first["id"], "--reason", "leak")
    cli("decisions", "list")
    cli("events", "tail")
    cli("keys", "rotate", first["id"], expect=2)

    for command, output in cli.transcript:
        if command in FULL_KEY_COMMANDS:
            continue
        for key in full_keys:
            assert key not in output, command
            assert key[3:-4] not in output, command
    issue_outputs = "".join(out for cmd, out in cli.transcript if cmd in FULL_KEY_COMMANDS)
    assert all(key in issue_outputs for key in full_keys)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for key in full_keys:
        assert key not in logged
        assert key[3:-4] not in logged
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for key in full_keys:
                assert key.encode() not in data, path


def test_cli_runs_as_a_console_script(tmp_path):
    """The installed entry point works end to end in a subprocess."""
    exe = Path(sys.executable).with_name("hydraguard")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAGUARD_")}
    run = lambda *a: subprocess.run([str(exe), *a], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)  # noqa: E731
    assert run("init").returncode == 0
    created = run("orgs", "create", "acme")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "acme"
    bad = run("orgs", "create", "x", "--tier", "nope")
    assert bad.returncode == 2 and "unknown tier" in bad.stderr


# -- admin tokens and the audit log ---------------------------------------------------------------------------
def test_cli_changes_are_audited_and_the_chain_verifies(cli):
    import getpass

    import sqlalchemy as sa

    from hydraguard.admin.tables import audit_log

    org_id, account_id = _org_and_account(cli)
    key = cli.json("keys", "issue", account_id)
    cli.json("decisions", "add", "--type", "block", "--scope", "key", "--value", key["id"], "--reason", "leak")
    token = cli.json("admin", "token", "create", "ops", "--role", "analyst")
    assert token["token"].startswith("hga_") and token["role"] == "analyst"
    listed = cli("admin", "token", "list").stdout
    assert token["token"] not in listed and json.loads(listed)["name"] == "ops"
    assert cli.json("admin", "token", "revoke", token["id"])["revoked_at"] is not None
    assert "already revoked" in cli("admin", "token", "revoke", token["id"], expect=2).stderr
    assert "exists" in cli("admin", "token", "create", "ops", "--role", "admin", expect=2).stderr
    cli("admin", "token", "create", "bad name", "--role", "admin", expect=2)
    cli("admin", "token", "create", "x", "--role", "root", expect=2)

    entries = cli.json_lines("audit", "tail", "-n", "100")
    assert [e["action"] for e in entries] == [
        "org.create",
        "account.create",
        "key.issue",
        "decision.add",
        "token.create",
        "token.revoke",
    ]
    assert {e["actor"] for e in entries} == {f"cli:{getpass.getuser()}"}
    assert entries[0]["target"] == org_id and entries[1]["target"] == account_id
    assert [e["seq"] for e in cli.json_lines("audit", "tail", "-n", "2")] == [5, 6]
    verified = cli("audit", "verify")
    assert "audit log intact: 6 entries" in verified.stdout and entries[-1]["hash"] in verified.stdout

    registry = cli.registry()
    try:
        with registry.engine.begin() as conn:
            conn.execute(sa.update(audit_log).where(audit_log.c.seq == 3).values(target="key_other"))
    finally:
        registry.close()
    broken = cli("audit", "verify", expect=1)
    assert "entry 3 does not match its hash" in broken.stderr


def test_admin_serve_listens_on_loopback_and_needs_a_token(cli, tmp_path):
    import httpx

    from hydraguard.testing.servers import free_port

    token = cli.json("admin", "token", "create", "root", "--role", "admin")["token"]
    port = free_port()
    exe = Path(sys.executable).with_name("hydraguard")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAGUARD_")}
    env["HYDRAGUARD_ADMIN__PORT"] = str(port)
    server = subprocess.Popen(
        [str(exe), "--config", str(cli.config), "admin", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                spec = httpx.get(url + "/openapi.json")
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()
                time.sleep(0.1)
        assert spec.json()["info"]["title"] == "hydraguard admin API"
        assert httpx.get(url + "/v1/orgs").status_code == 401
        created = httpx.post(url + "/v1/orgs", json={"name": "acme"}, headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201
        assert [o["id"] for o in cli.json_lines("orgs", "list")] == [created.json()["id"]]
        assert cli.json_lines("audit", "tail")[-1]["actor"] == "token:root"
    finally:
        server.terminate()
        server.wait(timeout=10)
