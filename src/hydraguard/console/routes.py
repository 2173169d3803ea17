"""The console's pages and actions, at /console on the admin app.

Login takes an admin token and keeps it in an HttpOnly, SameSite=Strict cookie; every page checks it as the API
checks a bearer token (unknown or revoked: back to the login page; too small a role: 403). Actions call the same
audited admin operations as the REST API (`AdminServices`), with the logged-in token as the actor, so each lands
in the audit log as `token:<name>`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.params import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hydraguard.accounts.verification import LEVELS
from hydraguard.admin.audit import Actor
from hydraguard.admin.schemas import Id
from hydraguard.admin.services import AdminError, AdminServices
from hydraguard.admin.tokens import AdminToken, Role
from hydraguard.console import svg, traffic
from hydraguard.console.features import account_features
from hydraguard.decide.model import Decision, DecisionType
from hydraguard.decide.policy import group_id
from hydraguard.detect.accounts import EVENT_COLUMNS
from hydraguard.detect.campaigns import CampaignStatus

COOKIE = "hydraguard_console"
HERE = Path(__file__).parent
ENFORCE = ("block", "throttle", "challenge", "degrade")
ACCOUNT_COLUMNS = tuple(dict.fromkeys([*traffic.COLUMNS, *EVENT_COLUMNS]))  # the pages' and detection's
VERDICTS = {"confirm": CampaignStatus.CONFIRMED, "dismiss": CampaignStatus.DISMISSED, "reopen": CampaignStatus.OPEN}

router = APIRouter(prefix="/console", include_in_schema=False)
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)
_templates.filters["when"] = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"
_templates.filters["number"] = lambda n: f"{n:,}"
_templates.filters["as_json"] = lambda v: json.dumps(v, indent=1, sort_keys=True, default=str)
ConsoleId = Annotated[Id, PathParam()]


def _services(request: Request) -> AdminServices:
    return request.app.state.services  # type: ignore[no-any-return]


def _events_dir(request: Request) -> str | None:
    return getattr(request.app.state, "events_dir", None)


def _who(request: Request, needed: Role = Role.VIEWER) -> AdminToken:
    plaintext = request.cookies.get(COOKIE)
    token = _services(request).authenticate(plaintext) if plaintext else None
    if token is None:  # to the login page, and back here after it
        login = f"/console/login?next={quote(request.url.path)}"
        raise HTTPException(303, "log in with an admin token", headers={"Location": login})
    if not token.role.allows(needed):
        raise HTTPException(403, f"this needs the {needed} role; token {token.name!r} has the {token.role} role")
    return token


def _page(request: Request, template: str, token: AdminToken, **context: Any) -> HTMLResponse:
    body = _templates.get_template(template).render(
        token=token,
        can_act=token.role.allows(Role.ANALYST),
        message=request.query_params.get("done", ""),
        error=request.query_params.get("error", ""),
        now=time.time(),
        **context,
    )
    return HTMLResponse(body)


async def _form(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=20)
    return {k: v[0] for k, v in fields.items()}


# -- login ----------------------------------------------------------------------------------------------
@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    body = _templates.get_template("login.html").render(
        next=request.query_params.get("next", "/console"), error=request.query_params.get("error", "")
    )
    return HTMLResponse(body)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    target = form.get("next", "/console")
    if not target.startswith("/console"):  # never an open redirect
        target = "/console"
    token = form.get("token", "").strip()
    if not token or _services(request).authenticate(token) is None:
        return RedirectResponse(f"/console/login?error=unknown+or+revoked+token&next={quote(target)}", 303)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/console")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    types = {"console.css": "text/css", "console.js": "text/javascript"}
    if name not in types:
        raise HTTPException(404, "no such file")
    return Response((HERE / "static" / name).read_bytes(), media_type=types[name])


# -- pages ----------------------------------------------------------------------------------------------
@router.get("")
async def overview(request: Request) -> HTMLResponse:
    token = _who(request)
    admin = _services(request)
    events = traffic.read(_events_dir(request))
    data = traffic.series(events)
    decisions = await admin.list_decisions()
    open_campaigns = admin.list_campaigns(CampaignStatus.OPEN)
    rules = sorted(admin.list_rules(), key=lambda r: -sum(r[1].values()))
    return _page(
        request,
        "overview.html",
        token,
        chart=svg.outcomes_chart(data),
        legend=svg.legend(),
        totals=dict(zip(traffic.OUTCOMES, data.counts.sum(axis=1).tolist(), strict=True)),
        requests=events.num_rows,
        decisions=decisions,
        campaigns=open_campaigns,
        all_campaigns=len(admin.list_campaigns()),
        rules=[r for r in rules if sum(r[1].values())][:5],
    )


@router.get("/campaigns")
async def campaigns(request: Request) -> HTMLResponse:
    token = _who(request)
    status = request.query_params.get("status")
    chosen = CampaignStatus(status) if status in {str(s) for s in CampaignStatus} else None
    return _page(request, "campaigns.html", token, campaigns=_services(request).list_campaigns(chosen), status=chosen)


@router.get("/campaigns/{campaign_id}")
async def campaign(request: Request, campaign_id: ConsoleId) -> HTMLResponse:
    token = _who(request)
    admin = _services(request)
    try:
        found = admin.get_campaign(campaign_id)
    except AdminError as exc:
        raise HTTPException(404, str(exc)) from exc
    decisions = admin.decisions_for(await admin.list_decisions(), found)
    events = traffic.read(_events_dir(request), found.accounts)
    timeline = admin.campaign_timeline(campaign_id)
    audit_entries = [e for e in admin.audit_tail(1_000) if e.target in (campaign_id, f"group:{group_id(campaign_id)}")]
    marks = [(e.at, f"{e.kind}: {e.actor}") for e in timeline] + [
        (e.at, f"{e.action} by {e.actor}") for e in audit_entries
    ]
    enforced = _enforced_accounts(decisions, found.accounts)
    members = [_member(admin, account, enforced) for account in found.accounts]
    return _page(
        request,
        "campaign.html",
        token,
        campaign=found,
        decisions=decisions,
        timeline=timeline,
        audit=audit_entries,
        chart=svg.outcomes_chart(traffic.series(events), marks=marks),
        legend=svg.legend(),
        graph=svg.evidence_graph(members),
        graph_legend=svg.graph_legend(),
        contained=traffic.containment(events),
        areas=traffic.top(events["capability_area"].to_pylist()),
        # from the log when it still holds the campaign's requests, else the samples detection kept
        templates=traffic.samples(events) or [(t["template_hash"], t["requests"], None) for t in found.templates],
        requests=events.num_rows,
        enforce=ENFORCE,
    )


def _enforced_accounts(decisions: list[Decision], accounts: tuple[str, ...]) -> set[str]:
    if any(d.value.startswith("campaign:") for d in decisions):
        return set(accounts)
    return {d.value for d in decisions}


def _member(admin: AdminServices, account_id: str, enforced: set[str]) -> svg.Member:
    try:
        account = admin.get_account(account_id)
    except AdminError:
        return svg.Member(account_id, (), account_id in enforced)
    indicators = [
        ("payment", account.payment_fingerprint),
        ("email", account.email_domain),
        ("signup subnet", svg.subnet(account.signup_ip)),
    ]
    return svg.Member(account_id, tuple((k, v) for k, v in indicators if v), account_id in enforced)


@router.post("/campaigns/{campaign_id}/actions")
async def campaign_action(request: Request, campaign_id: ConsoleId) -> Response:
    token = _who(request, Role.ANALYST)
    admin = _services(request)
    actor = Actor(f"token:{token.name}", token.role.value)
    form = await _form(request)
    action = form.get("action", "")
    note = form.get("note", "")
    try:
        if action in VERDICTS:
            await admin.set_campaign_status(actor, campaign_id, VERDICTS[action], note)
        elif action in ENFORCE:
            await admin.enforce_campaign(actor, campaign_id, DecisionType(action), reason=note)
        elif action == "lift":
            await admin.lift_campaign(actor, campaign_id)
        elif action == "note":
            admin.note_campaign(actor, campaign_id, note)
        else:
            raise HTTPException(422, f"unknown action {action!r}")
    except AdminError as exc:
        return RedirectResponse(f"/console/campaigns/{campaign_id}?error={quote(str(exc))}", status_code=303)
    return RedirectResponse(f"/console/campaigns/{campaign_id}?done={quote(action)}", status_code=303)


@router.get("/campaigns/{campaign_id}/stix")
async def campaign_stix(request: Request, campaign_id: ConsoleId) -> Response:
    _who(request)
    try:
        bundle = _services(request).export_campaign(campaign_id)
    except AdminError as exc:
        raise HTTPException(404, str(exc)) from exc
    headers = {"Content-Disposition": f'attachment; filename="{campaign_id}.stix.json"'}
    return Response(json.dumps(bundle, indent=2), media_type="application/stix+json", headers=headers)


@router.get("/accounts")
async def accounts(request: Request) -> HTMLResponse:
    token = _who(request)
    admin = _services(request)
    in_campaigns: dict[str, list[str]] = {}
    for found in admin.list_campaigns():
        for account in found.accounts:
            in_campaigns.setdefault(account, []).append(found.id)
    query = request.query_params.get("q", "").strip()
    listed = [a for a in admin.list_accounts() if not query or query in a.id or query in (a.email_domain or "")]
    listed.sort(key=lambda a: (a.id not in in_campaigns, a.id))
    return _page(
        request, "accounts.html", token, accounts=listed[:500], total=len(listed), campaigns=in_campaigns, query=query
    )


@router.get("/accounts/{account_id}")
async def account(request: Request, account_id: ConsoleId) -> HTMLResponse:
    token = _who(request)
    admin = _services(request)
    try:
        found = admin.get_account(account_id)
    except AdminError as exc:
        raise HTTPException(404, str(exc)) from exc
    every_event = traffic.read(_events_dir(request), columns=ACCOUNT_COLUMNS)
    events = traffic.of_accounts(every_event, [account_id])
    all_campaigns = admin.list_campaigns()
    member_of = [c for c in all_campaigns if account_id in c.accounts]
    linked = sorted({a for c in member_of for a in c.accounts} - {account_id})
    groups = {group_id(c.id) for c in member_of}
    decisions = [d for d in await admin.list_decisions() if d.value == account_id or d.value in groups]
    suspects = {a for c in all_campaigns if c.status is not CampaignStatus.DISMISSED for a in c.accounts}
    return _page(
        request,
        "account.html",
        token,
        account=found,
        verification=await admin.verification_status(account_id),
        levels=LEVELS,
        features=account_features(every_event.select(EVENT_COLUMNS), account_id, suspects),
        keys=admin.list_keys(account_id),
        chart=svg.outcomes_chart(traffic.series(events)),
        legend=svg.legend(),
        requests=events.num_rows,
        areas=traffic.top(events["capability_area"].to_pylist()),
        clients=traffic.top(events["client_ip"].to_pylist()),
        campaigns=member_of,
        linked=linked[:200],
        decisions=decisions,
    )


@router.get("/rules")
async def rules(request: Request) -> HTMLResponse:
    token = _who(request)
    return _page(request, "rules.html", token, rules=_services(request).list_rules())


@router.get("/intel")
async def intel(request: Request) -> HTMLResponse:
    from hydraguard.intel.store import IntelStore

    token = _who(request)
    indicators = IntelStore(_services(request).registry.engine).list()
    matches = traffic.read(_events_dir(request))["intel_matches"].to_pylist()
    counted = traffic.top([m for value in matches if value for m in value.split(",")], 50)
    return _page(request, "intel.html", token, indicators=indicators[:500], total=len(indicators), matches=counted)


@router.get("/audit")
async def audit(request: Request) -> HTMLResponse:
    token = _who(request)
    admin = _services(request)
    return _page(
        request, "audit.html", token, entries=list(reversed(admin.audit_tail(200))), chain=admin.verify_audit()
    )
