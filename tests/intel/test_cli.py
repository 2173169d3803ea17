from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hydraguard.intel.cli import app
from hydraguard.intel.export import CampaignReport, campaign_bundle
from hydraguard.intel.store import IntelStore
from hydraguard.intel.taxii import TaxiiCollection, taxii_app
from hydraguard.testing.servers import ThreadedServer, free_port

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/registry.db"


def run(db: str, *args: str) -> tuple[int, str, list[dict[str, object]]]:
    result = runner.invoke(app, ["--registry", db, *args])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, result.stdout + result.stderr, lines


def test_add_list_remove(db: str) -> None:
    code, _, (added,) = run(
        db,
        "add",
        "ip",
        "198.51.100.0/24",
        "--source",
        "analyst",
        "--confidence",
        "90",
        "--expires",
        "2099-01-01T00:00:00Z",
    )
    assert code == 0 and added["value"] == "198.51.100.0/24" and added["sources"] == ["analyst"]
    assert added["expires_at"] == 4_070_908_800.0
    run(db, "add", "email_domain", "Evil.Example")
    _, _, listed = run(db, "list")
    assert [i["kind"] for i in listed] == ["email_domain", "ip"]
    _, _, only_ip = run(db, "list", "--kind", "ip")
    assert [i["id"] for i in only_ip] == [added["id"]]
    code, output, _ = run(db, "remove", str(added["id"]))
    assert code == 0 and f"removed {added['id']}" in output
    code, output, _ = run(db, "remove", str(added["id"]))
    assert code == 2 and "no indicator" in output


def test_bad_input_is_refused_and_changes_nothing(db: str, tmp_path: Path) -> None:
    code, output, _ = run(db, "add", "ip", "198.51.100.7/24")
    assert code == 2 and "host bits" in output
    bad = tmp_path / "bad.txt"
    bad.write_text("198.51.100.1\nnope\n")
    code, output, _ = run(db, "import", str(bad), "--format", "list", "--kind", "ip")
    assert code == 2 and "line 2" in output and "nothing applied (1 indicators parsed)" in output
    code, output, _ = run(db, "import", str(bad), "--format", "list")
    assert code == 2 and "needs --kind" in output
    code, output, _ = run(db, "import", str(bad), "--format", "list", "--kind", "ip", "--max-bytes", "5")
    assert code == 2 and "over the 5 maximum" in output
    assert IntelStore.from_url(db).count() == 0


def test_import_each_format(db: str, tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("AS64500\nAS64501\n")
    (tmp_path / "feed.csv").write_text("kind,value,confidence\nemail_domain,evil.example,70\n")
    report = CampaignReport(
        id="c",
        name="c",
        first_seen=1.7e9,
        last_seen=1.7e9,
        member_count=2,
        indicators=(("ip", "192.0.2.0/24"), ("email_domain", "evil.example")),
    )
    (tmp_path / "bundle.json").write_text(campaign_bundle(report).serialize())
    _, _, (listed,) = run(db, "import", str(tmp_path / "list.txt"), "--format", "list", "--kind", "asn")
    assert (listed["parsed"], listed["added"]) == (2, 2)
    _, _, (csv_report,) = run(db, "import", str(tmp_path / "feed.csv"), "--format", "csv")
    assert csv_report["added"] == 1
    _, _, (stix_report,) = run(db, "import", str(tmp_path / "bundle.json"), "--format", "stix", "--source", "lab")
    assert (stix_report["added"], stix_report["updated"], stix_report["skipped"]) == (1, 1, 0)
    _, _, listed_all = run(db, "list", "--kind", "email_domain")
    assert listed_all[0]["sources"] == ["feed.csv", "lab"]


@pytest.fixture
def taxii_root() -> Iterator[tuple[str, str]]:
    collection = TaxiiCollection(id="campaigns", title="campaigns")
    report = CampaignReport(
        id="c", name="c", first_seen=1.7e9, last_seen=1.7e9, member_count=2, indicators=(("ip", "192.0.2.0/24"),)
    )
    collection.add_bundle(campaign_bundle(report))
    with ThreadedServer(taxii_app({collection.id: collection})) as server:
        yield server.url + "/hydraguard/", collection.id


def test_poll(db: str, taxii_root: tuple[str, str]) -> None:
    url, collection = taxii_root
    code, _, (report,) = run(db, "poll", url, "--collection", collection)
    assert code == 0 and report["added"] == 1 and report["bookmark"]
    code, output, _ = run(db, "poll", f"http://127.0.0.1:{free_port()}/", "--collection", "x", "--timeout", "2")
    assert code == 2 and "cannot connect" in output
