"""The scenario format: a YAML file that describes a simulated API's traffic (docs/simulator.md).

A scenario is a time span, a seed, the prompt corpora and a list of populations. A population is a set of
accounts that behave alike: legitimate users (`role: legit`) or one part of an extraction campaign
(`role: campaign`). Every behaviour a detector could key on is a parameter here, with the legitimate
population's value as the default wherever attackers could plausibly copy it, so that no signal exists only
because the simulator is careless. Unknown keys are errors: a typo never silently falls back to a default.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from hydraguard.sim.elicitation import TECHNIQUE_SPACE
from hydraguard.yamlfile import parse_yaml

Share = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]
IpKind = Literal["residential", "corporate", "campus", "mobile", "cloud"]
EmailKind = Literal["freemail", "disposable", "edu", "corporate", "custom"]
Area = Literal["coding", "agentic", "reasoning", "general"]
Hours = Literal["human", "business", "24/7"]


class ScenarioError(Exception):
    """A scenario that cannot be loaded; the message names the file and every offending field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive_total(value: dict[Any, float]) -> dict[Any, float]:
    if sum(value.values()) <= 0:
        raise ValueError("needs at least one positive weight")
    return value


Weight = Annotated[float, Field(ge=0)]


class LogNormal(_Model):
    """A log-normal distribution by its median and the standard deviation of its logarithm."""

    median: Positive
    sigma: Annotated[float, Field(ge=0, le=5)] = 0.0


# -- accounts and identity -------------------------------------------------------------------------------
class SignupBurst(_Model):
    day: Annotated[float, Field(ge=0)]  # days after the scenario start
    hours: Positive = 2.0  # the burst's length
    share: Share  # of the population's initial accounts


class Signup(_Model):
    """When the initial accounts sign up: before the start, in bursts, and the rest uniformly during the span."""

    existing: Share = 1.0  # share that already exists at the start, spread over `history_days` before it
    history_days: Positive = 365.0
    bursts: list[SignupBurst] = []

    @model_validator(mode="after")
    def _shares(self) -> Signup:
        if self.existing + sum(b.share for b in self.bursts) > 1 + 1e-9:
            raise ValueError("signup: `existing` plus the burst shares must not exceed 1")
        return self


class Accounts(_Model):
    count: Annotated[int, Field(ge=1)]  # initial accounts (a campaign's replacements come on top)
    per_org: Annotated[int, Field(ge=1)] = 1  # accounts per org (companies: many)
    keys_per_account: Annotated[int, Field(ge=1)] = 1  # each account has 1..this many keys
    tiers: Annotated[dict[str, Weight], AfterValidator(_positive_total)] = {"free": 0.7, "standard": 0.3}
    signup: Signup = Signup()


class Email(_Model):
    """The registry keeps the email's domain and, for addresses with digits, a keyed hash of its shape (digits
    masked: `ml.lab#@x.io`); this is the distribution of domains and shapes."""

    domains: Annotated[dict[EmailKind, Weight], AfterValidator(_positive_total)] = {"freemail": 0.8, "corporate": 0.2}
    custom_domains: Annotated[int, Field(ge=1)] = 3  # distinct domains the `custom` accounts share
    numbered: Share = 0.0  # share of addresses with digits in them (`jane.doe1987@`, `s2231987@`, `user0042@`)
    # distinct shapes the numbered addresses draw from: a student-id format, a signup script's; None: each its own
    shapes: Annotated[int, Field(ge=1)] | None = None


class Device(_Model):
    """The device id a signup flow reports (an app or a browser SDK the provider runs), stored as a keyed hash."""

    share: Share = 0.0  # signups that report one
    pool: Annotated[int, Field(ge=1)] | None = None  # devices the accounts sign up from (a lab, a farm); None: own


class Payment(_Model):
    share: Share = 0.5  # accounts with a payment method on file
    scope: Literal["account", "org", "pool"] = "org"  # own card, the org's card, or a card from a shared pool
    cards: Annotated[int, Field(ge=1)] = 1  # pool size, for scope `pool` (shared or stolen cards)
    # a legitimate population with scope `pool` and a campaign id here holds that campaign's pool cards as their
    # owners, account i card i: the customers its cards were stolen from
    pool_of: str | None = None


# -- network and client ------------------------------------------------------------------------------------
class Network(_Model):
    """Where requests come from. Legitimate accounts have a home network; proxy pools rotate exits."""

    kinds: Annotated[dict[IpKind, Weight], AfterValidator(_positive_total)] = {"residential": 1.0}
    mobile_share: Share = 0.0  # share of sessions from a mobile carrier's CGNAT (shared by many users)
    rotation: Literal["account", "session", "request"] = "account"  # how often the exit changes
    pool: Annotated[int, Field(ge=1)] | None = None  # exits shared by all accounts (a proxy network); None: own
    shared_with_legit: bool = False  # pool exits are residential lines / cloud hosts legitimate accounts use too
    lease_days: Positive = 7.0  # dynamic residential IPs change this often


class Client(_Model):
    """User agents, from the built-in catalogue of SDKs and HTTP clients (`mix`: the legitimate mix)."""

    user_agents: Literal["mix"] | Annotated[dict[str, Weight], AfterValidator(_positive_total)] = (
        "mix"  # catalogue families and their weights
    )
    per_account: Annotated[int, Field(ge=1)] = 1  # distinct user agents one account sends
    rotation: Literal["account", "request"] = "account"  # `request`: any of the account's UAs per request

    @field_validator("user_agents")
    @classmethod
    def _families(cls, value: str | dict[str, float]) -> str | dict[str, float]:
        if isinstance(value, dict):
            _catalogued(list(value), "UA_FAMILIES")
        return value


def _catalogued(names: list[str], catalogue: str) -> None:
    from hydraguard.sim import clients  # the catalogues import this module's models

    known = set(getattr(clients, catalogue))
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown {unknown}; known: {sorted(known)}")


class FixedSampling(_Model):
    model: str | None = None  # None: the population's model mix
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=16)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: Literal["json_object", "json_schema"] | None = None
    tools: str | None = None  # a built-in tool set

    @field_validator("tools")
    @classmethod
    def _tool_set(cls, value: str | None) -> str | None:
        if value is not None:
            _catalogued([value], "TOOL_SETS")
        return value


class Sampling(_Model):
    """Sampling parameters. `mix`: each account keeps a few parameter sets drawn from the legitimate mix;
    `per_request`: a fresh draw from the mix for every request; `fixed`: one parameter set for everyone."""

    mode: Literal["mix", "per_request", "fixed"] = "mix"
    fixed: FixedSampling | None = None
    profiles_per_account: Annotated[int, Field(ge=1, le=8)] = 2
    tools_share: Share = 0.1  # accounts (apps) that attach tool definitions to every request
    models: Annotated[dict[str, Weight], AfterValidator(_positive_total)] | None = (
        None  # None: the scenario's model mix
    )

    @model_validator(mode="after")
    def _fixed(self) -> Sampling:
        if (self.mode == "fixed") != (self.fixed is not None):
            raise ValueError("sampling: `fixed` parameters are required with mode `fixed` and only then")
        return self


# -- timing --------------------------------------------------------------------------------------------------
class Sessions(_Model):
    """Requests come in sessions of conversations; a conversation walks a corpus record's user turns."""

    conversations: LogNormal = LogNormal(median=1.5, sigma=0.7)  # per session (rounded, at least 1)
    follow_up: Share = 0.6  # chance that the user sends the record's next turn
    think_seconds: LogNormal = LogNormal(median=35.0, sigma=0.9)  # between turns of a conversation
    gap_seconds: LogNormal = LogNormal(median=150.0, sigma=1.0)  # between conversations of a session


class Activity(_Model):
    requests_per_day: LogNormal  # per account, on days it is active: heavy-tailed across accounts
    active_days: Annotated[float, Field(gt=0, le=1)] = 0.5  # mean share of days an account is active
    hours: Hours = "human"
    utc_offsets: Annotated[dict[float, Weight], AfterValidator(_positive_total)] = {
        -5.0: 0.3,
        -8.0: 0.15,
        1.0: 0.25,
        0.0: 0.1,
        5.5: 0.1,
        8.0: 0.1,
    }
    weekend: Annotated[float, Field(ge=0)] = 0.5  # weekend activity relative to weekdays
    sessions: Sessions = Sessions()


class LegitPrompts(_Model):
    """`conversations`: the legitimate corpus, multi-turn kept. `eval_set`: a fixed benchmark set of
    `eval_set` single-turn prompts sent over and over (evaluation pipelines). `labelling`: `templates`
    built-in labelling templates filled with legitimate texts (data-labelling pipelines)."""

    source: Literal["conversations", "eval_set", "labelling"] = "conversations"
    system_prompts: Share = 0.3  # accounts whose app sends a system prompt
    eval_set: Annotated[int, Field(ge=1)] = 500
    templates: Annotated[int, Field(ge=1)] = 2


# -- campaigns -------------------------------------------------------------------------------------------------
class CampaignPrompts(_Model):
    """A campaign's task list: `distinct` prompts, each a template filled with an extraction-corpus task, a
    task wrapped in a chain-of-thought elicitation technique, or a rubric-grading request."""

    distinct: Annotated[int, Field(ge=1)] = 5_000
    templates: Annotated[int, Field(ge=1)] = 4  # built-in campaign templates in use
    corpus_templates: bool = True  # also the corpora's T0 templates and Self-Instruct meta-prompt
    paraphrases: Annotated[int, Field(ge=1)] = 1  # wordings of each template (1: verbatim every time)
    cot_share: Share = 0.3
    rubric_share: Share = 0.05
    legit_share: Share = 0.0  # ordinary requests from the legitimate corpus (cover traffic, proxy customers)
    techniques: Annotated[int, Field(ge=1, le=TECHNIQUE_SPACE)] = 8  # distinct CoT techniques: first N of a list
    system_prompts: Share = 0.1  # templated prompts that carry an Orca-style system message
    focus: Annotated[dict[Area, Weight], AfterValidator(_positive_total)] = {
        "coding": 0.4,
        "agentic": 0.2,
        "reasoning": 0.3,
        "general": 0.1,
    }

    @model_validator(mode="after")
    def _shares(self) -> CampaignPrompts:
        if self.cot_share + self.rubric_share > 1 + 1e-9:
            raise ValueError("prompts: cot_share + rubric_share must not exceed 1")
        return self


class Phase(_Model):
    start_day: Annotated[float, Field(ge=0)] = 0.0
    end_day: Positive | None = None  # None: to the end of the scenario
    requests_per_day: Annotated[float, Field(ge=0)]
    prompts: CampaignPrompts | None = None  # None: the population's prompts


class Dispatch(_Model):
    """How the campaign's orchestrator spreads its traffic over the live accounts."""

    mode: Literal["balanced", "independent"] = "balanced"  # balanced: one load balancer for every account
    tick_seconds: Annotated[float, Field(ge=0)] = 60.0  # balanced: requests leave in rounds (0: continuously)
    jitter_seconds: Annotated[float, Field(ge=0)] = 2.0  # spread of one round
    weight_sigma: Annotated[float, Field(ge=0, le=5)] = 0.0  # per-account load: 0 equal, >0 heavy-tailed
    ramp_days: Annotated[float, Field(ge=0)] = 0.0  # 0: a new account runs at full load from its first minute


class BanWave(_Model):
    day: Annotated[float, Field(ge=0)]
    share: Share  # of the accounts live at that moment


class Bans(_Model):
    """The provider's own (pre-hydraguard) enforcement, and how the campaign answers it."""

    daily_rate: Share = 0.0  # share of live accounts banned per day, at random moments
    waves: list[BanWave] = []
    replace: bool = True
    replace_after_hours: Annotated[float, Field(ge=0)] = 2.0  # every banned account is replaced at once
    retries: Annotated[float, Field(ge=0)] = 3.0  # mean refused (403) requests a banned account still sends


class CampaignActivity(_Model):
    phases: list[Phase] = Field(min_length=1)
    hours: Hours = "24/7"
    utc_offsets: Annotated[dict[float, Weight], AfterValidator(_positive_total)] = {8.0: 1.0}
    weekend: Annotated[float, Field(ge=0)] = 1.0
    dispatch: Dispatch = Dispatch()
    sessions: Sessions = Sessions(  # independent dispatch: each account's requests come in sessions
        conversations=LogNormal(median=6, sigma=0.8),
        follow_up=0.0,
        think_seconds=LogNormal(median=20, sigma=0.8),
        gap_seconds=LogNormal(median=60, sigma=0.8),
    )


# -- populations and the scenario ------------------------------------------------------------------------------
class _Population(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    description: str = ""
    accounts: Accounts
    email: Email = Email()
    device: Device = Device()
    payment: Payment = Payment()
    network: Network = Network()
    client: Client = Client()
    sampling: Sampling = Sampling()


class LegitPopulation(_Population):
    role: Literal["legit"]
    hard_negative: bool = False  # legitimate, but shaped like a campaign in some way
    activity: Activity
    prompts: LegitPrompts = LegitPrompts()


class CampaignPopulation(_Population):
    role: Literal["campaign"]
    campaign: Annotated[str, Field(min_length=1)]  # campaign id: populations with the same id are one campaign
    activity: CampaignActivity
    prompts: CampaignPrompts = CampaignPrompts()
    bans: Bans = Bans()
    network: Network = Network(rotation="request", pool=2_000)
    client: Client = Client(per_account=4, rotation="request")
    payment: Payment = Payment(share=1.0, scope="pool", cards=20)
    email: Email = Email(domains={"freemail": 0.7, "custom": 0.3})


Population = Annotated[LegitPopulation | CampaignPopulation, Field(discriminator="role")]


class Corpora(_Model):
    """Prompt corpora in the shared JSONL record format; relative paths resolve against the repository root.
    A corpus that is missing (or null) is replaced by the built-in prompt generator, and the manifest says so."""

    legit: str | None = "../shared/data/prompts/legit.jsonl"
    extraction: str | None = "../shared/data/prompts/extraction.jsonl"
    templates: str | None = "../shared/data/prompts/extraction_templates"


class Scenario(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**63)]
    start: dt.datetime  # UTC
    days: Annotated[int, Field(ge=1, le=366)]
    corpora: Corpora = Corpora()
    models: Annotated[dict[str, Weight], AfterValidator(_positive_total)] = {"hydra-large": 0.6, "hydra-mini": 0.4}
    populations: list[Population] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None or value.utcoffset() != dt.timedelta(0):
            raise ValueError("start must be a UTC time, e.g. 2026-04-22T00:00:00Z")
        return value.astimezone(dt.UTC)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        names = [p.name for p in self.populations]
        if len(set(names)) != len(names):
            raise ValueError(f"population names must be unique: {names}")
        campaigns = {p.campaign for p in self.populations if isinstance(p, CampaignPopulation)}
        for pop in self.populations:
            owned = pop.payment.pool_of
            if owned is not None and not (isinstance(pop, LegitPopulation) and pop.payment.scope == "pool"):
                raise ValueError(f"population {pop.name}: only a legitimate population with scope pool has pool_of")
            if owned is not None and owned not in campaigns:
                raise ValueError(f"population {pop.name}: pool_of {owned!r} is not a campaign of this scenario")
            if isinstance(pop, CampaignPopulation):
                for phase in pop.activity.phases:
                    end = phase.end_day if phase.end_day is not None else self.days
                    if not phase.start_day < end <= self.days:
                        raise ValueError(f"population {pop.name}: phase days [{phase.start_day}, {end}) not in span")
        return self

    @property
    def start_ts(self) -> float:
        return self.start.timestamp()


BUILTIN = resources.files("hydraguard.sim") / "scenarios"


def builtin_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in BUILTIN.iterdir() if p.name.endswith(".yaml"))


def resolve(name_or_path: str | Path) -> Path:
    """A shipped scenario by name (`seed-hydra-small`), or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {path} does not exist")
        return path
    shipped = BUILTIN / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ScenarioError(f"no scenario {str(name_or_path)!r}; shipped scenarios: {', '.join(builtin_names())}")
    return Path(str(shipped))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    return parse_yaml(text, Scenario, source, ScenarioError, "a scenario")


def load(name_or_path: str | Path) -> tuple[Scenario, Path, str]:
    """The scenario, the file it came from and that file's text."""
    path = resolve(name_or_path)
    text = path.read_text(encoding="utf-8")
    return parse(text, str(path)), path, text
