"""The batch analysis report: what an analyst reads first."""

from __future__ import annotations

from hydraguard.detect.analyze import SHADOW_ROWS, report
from hydraguard.detect.campaigns import Campaign, CampaignStatus


def campaign(subject: str, level: str, enforcing: bool, rules: tuple[str, ...], score: float = 0.5) -> Campaign:
    return Campaign(
        id=subject,
        level=level,
        status=CampaignStatus.OPEN,
        score=score,
        enforcing=enforcing,
        first_detected=0.0,
        last_detected=0.0,
        accounts=(f"acct_{subject}",),
        rules=rules,
        evidence=(),
        indicators=(),
        features={},
    )


def test_the_report_lists_clusters_and_enforced_subjects_and_sums_up_shadow_ones() -> None:
    shadow = [
        campaign(f"key:k{i:02d}", "request", False, ("reasoning-extraction-request",), score=0.9 - i / 100)
        for i in range(SHADOW_ROWS + 5)
    ]
    shadow.append(campaign("acct_quiet", "account", False, ("reasoning-trace-harvest",), score=0.1))
    listed = [
        campaign("cl_hydra", "cluster", True, ("hydra-reasoning-cluster",), score=0.99),
        campaign("acct_harvester", "account", True, ("reasoning-trace-harvest",), score=0.8),
    ]
    text = report([*listed, *reversed(shadow)], "runs/x")
    assert f"1 clusters and {len(shadow) + 1} single accounts, keys or addresses detected; 2 accounts" in text
    tables, _, rest = text.partition(f"## Seen by shadow rules only: {len(shadow)} single accounts, keys or addresses")
    assert "| cl_hydra |" in tables and "| acct_harvester |" in tables and "key:k00" not in tables
    assert f"- reasoning-extraction-request: {SHADOW_ROWS + 5}\n- reasoning-trace-harvest: 1\n" in rest
    rows = [line for line in rest.splitlines() if line.startswith("| key:") or line.startswith("| acct_")]
    assert rows[0].startswith("| key:k00 |") and len(rows) == SHADOW_ROWS  # the highest-scoring, in order
    assert "acct_quiet" not in rows[-1]


def test_a_report_without_shadow_only_subjects_has_no_shadow_section() -> None:
    text = report([campaign("cl_hydra", "cluster", False, ("hydra-synchronized-cluster",))], "runs/x")
    assert "| cl_hydra |" in text and "shadow" not in text
