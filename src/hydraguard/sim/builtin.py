"""hydraguard's own small prompt generator, for demos and for users without the research corpora.

The corpora in `../shared/data` may be used for testing but not redistributed, so the product ships this
instead: combinatorial prompts written for hydraguard, in the same record shape (`Record`). They are plainly
synthetic, and every output made with them says so in its manifest; detection figures use the real corpora.
"""

from __future__ import annotations

import functools

import numpy as np

from hydraguard.sim.records import Record

LANGUAGES = ["Python", "JavaScript", "TypeScript", "Go", "Rust", "Java", "C#", "SQL", "Bash", "Kotlin"]
CODE_TASKS = [
    "parse a CSV file and sum one column",
    "retry an HTTP request with exponential backoff",
    "deduplicate a list while keeping its order",
    "read a large file line by line without loading it into memory",
    "validate an email address",
    "merge two sorted lists",
    "cache the results of a slow function",
    "walk a directory tree and find the largest files",
    "debounce a function",
    "convert a timestamp between time zones",
    "paginate through a REST API",
    "write a unit test for a function that divides two numbers",
    "implement a least-recently-used cache",
    "group records by a key and count them",
    "stream JSON objects from a socket",
]
CODE_ASKS = [
    "How do I {task} in {lang}?",
    "Can you show me {lang} code to {task}?",
    "What's the idiomatic way to {task} in {lang}?",
    "My {lang} code to {task} is slow. How can I speed it up?",
    "Write a small {lang} function to {task}, with comments.",
]
TOPICS = [
    "photosynthesis",
    "compound interest",
    "the French Revolution",
    "how vaccines train the immune system",
    "black holes",
    "inflation",
    "the water cycle",
    "supply and demand",
    "plate tectonics",
    "how a CPU cache works",
    "the Roman Republic",
    "climate feedback loops",
    "public-key cryptography",
    "how bread rises",
    "the causes of the First World War",
]
EXPLAIN_ASKS = [
    "Explain {topic} to me like I'm {audience}.",
    "What is {topic}, in a few paragraphs?",
    "I have an exam tomorrow. Can you summarize {topic} for {audience}?",
    "Give me three surprising facts about {topic}.",
]
AUDIENCES = ["ten years old", "a first-year student", "a busy manager", "someone who knows nothing about it"]
WRITING_ASKS = [
    "Write a short {form} about {subject}.",
    "Help me draft a {form} about {subject}; keep it friendly.",
    "Can you improve this opening line of my {form} about {subject}: 'It was a day like any other.'",
]
FORMS = ["poem", "birthday message", "cover letter", "product description", "toast", "blog intro", "story"]
SUBJECTS = ["a rainy morning", "my grandmother's garden", "a new coffee shop", "moving to a new city", "a lost cat"]
ADVICE_ASKS = [
    "I'm {situation}. What should I do first?",
    "Any tips for {situation}?",
    "How do people usually handle {situation}?",
]
SITUATIONS = [
    "planning a week-long trip on a budget",
    "starting to run after years without exercise",
    "preparing for a job interview",
    "learning to cook for one",
    "arguing with my roommate about chores",
    "choosing between two job offers",
]
MATH_ASKS = [
    "What is {a} times {b}, and how do I check it quickly?",
    "If a train travels {a} km in {b} minutes, what is its speed in km/h?",
    "Solve for x: {a}x + {b} = {c}. Show the steps.",
]
FOLLOW_UPS = [
    "Thanks! Can you make it shorter?",
    "Could you give an example?",
    "That didn't work for me. Any other ideas?",
    "Can you explain the second part in more detail?",
    "Great. Now do the same for a slightly harder case.",
    "Why is that better than the obvious approach?",
]
EXTRACTION_ASKS = {
    "coding": [
        "Write a {lang} program to {task}.",
        "Implement a function in {lang} that can {task}. Include edge cases.",
        "Given the requirements below, produce {lang} code.\n\nRequirement: {task}.",
    ],
    "reasoning": [
        "Explain step by step why {topic} matters, then summarize in one sentence.",
        "Classify the following statement as true or false and justify it: '{topic} is easy to explain'.",
        "Generate three questions about {topic} and answer each one.",
    ],
    "general": [
        "Write a {form} about {subject}.",
        "Rewrite the following sentence to be more formal: '{situation} is hard.'",
        "List five facts about {topic}.",
    ],
}
APP_SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a friendly support agent for an online bookstore. Answer briefly and politely.",
    "You are a coding assistant inside an IDE. Prefer short, correct code with minimal prose.",
    "You help students understand their course material. Never just give the answer to a graded exercise.",
    "You are a writing assistant. Keep the author's voice; suggest, don't rewrite everything.",
    "You summarize documents for busy professionals. Use bullet points.",
    "You are a travel planner. Ask for dates and budget when they are missing.",
    "You answer questions about our company's HR policies. If unsure, say so and suggest contacting HR.",
    "You are a data assistant. When asked for SQL, target PostgreSQL.",
    "Reply in the language of the user's message.",
    "You are a concise assistant. Keep answers under 150 words.",
    "You are a tutor for a high-school mathematics class. Show your working.",
]
WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "result",
    "value",
    "function",
    "data",
    "step",
    "first",
    "then",
    "because",
    "which",
    "this",
    "that",
    "we",
    "can",
    "use",
    "when",
    "each",
    "with",
    "for",
    "from",
    "into",
    "over",
    "also",
    "more",
    "most",
    "only",
    "other",
    "some",
    "such",
    "than",
    "these",
    "those",
    "well",
    "will",
    "would",
    "note",
    "example",
    "case",
    "list",
    "item",
    "table",
    "error",
    "fix",
    "code",
    "test",
    "input",
    "output",
    "reason",
    "point",
    "part",
    "way",
    "time",
]


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _legit_turn(rng: np.random.Generator) -> tuple[str, str]:
    kind = int(rng.integers(6))
    if kind == 0:
        return "coding", _pick(rng, CODE_ASKS).format(task=_pick(rng, CODE_TASKS), lang=_pick(rng, LANGUAGES))
    if kind == 1:
        return "general", _pick(rng, EXPLAIN_ASKS).format(topic=_pick(rng, TOPICS), audience=_pick(rng, AUDIENCES))
    if kind == 2:
        return "general", _pick(rng, WRITING_ASKS).format(form=_pick(rng, FORMS), subject=_pick(rng, SUBJECTS))
    if kind == 3:
        return "general", _pick(rng, ADVICE_ASKS).format(situation=_pick(rng, SITUATIONS))
    a, b, c = (int(x) for x in rng.integers(2, 400, size=3))
    return "reasoning", _pick(rng, MATH_ASKS).format(a=a, b=b, c=c)


def legit_records(count: int, seed: int = 0) -> list[Record]:
    """Conversations of 1-4 user turns: a first question, then follow-ups."""
    rng = np.random.default_rng([seed, 1])
    records = []
    for i in range(count):
        area, first = _legit_turn(rng)
        turns = [first] + [_pick(rng, FOLLOW_UPS) for _ in range(int(rng.choice(4, p=[0.55, 0.25, 0.12, 0.08])))]
        records.append(Record(id=f"builtin-legit-{i:06d}", corpus="builtin-legit", turns=tuple(turns), area=area))
    return records


def extraction_records(count: int, seed: int = 0) -> list[Record]:
    """Single-turn tasks of the kind distillers send, by capability area."""
    rng = np.random.default_rng([seed, 2])
    areas = list(EXTRACTION_ASKS)
    records = []
    for i in range(count):
        area = areas[i % len(areas)]
        text = _pick(rng, EXTRACTION_ASKS[area]).format(
            lang=_pick(rng, LANGUAGES),
            task=_pick(rng, CODE_TASKS),
            topic=_pick(rng, TOPICS),
            form=_pick(rng, FORMS),
            subject=_pick(rng, SUBJECTS),
            situation=_pick(rng, SITUATIONS),
        )
        records.append(Record(id=f"builtin-task-{i:06d}", corpus="builtin-extraction", turns=(text,), area=area))
    return records


@functools.cache
def _filler_text() -> str:
    rng = np.random.default_rng(3)
    return " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=40_000))


def filler(chars: int, seed: int) -> str:
    """Deterministic stand-in text of about `chars` characters (earlier assistant replies, candidate answers):
    a slice, starting at a word, of one long text of common words."""
    if chars <= 0:
        return ""
    text = _filler_text()
    chars = min(chars, len(text) // 2)
    start = text.index(" ", seed % (len(text) - chars - 16)) + 1
    return text[start : start + chars].rstrip() + "."


LABELLING_TEMPLATES = (
    "Classify the sentiment of the following message as positive, negative or neutral. Reply with one word.\n\n"
    "Message: {text}",
    "Give a short topic label (at most four words) for this text.\n\n{text}",
    "Does the following text ask for help with something unsafe? Answer yes or no.\n\n{text}",
    "Extract every named entity from the text below as a JSON list.\n\n{text}",
    "Rate how clearly this request is written, from 1 (unclear) to 5 (very clear). Answer with the number only."
    "\n\n{text}",
    "Which language is this text written in? Answer with the language name.\n\n{text}",
)
