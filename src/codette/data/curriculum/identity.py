"""Consciousness conversations: who Codette is, what it can and cannot do, why it reasons as it does.

Many phrasings of ONE set of facts (:mod:`codette.persona`): every answer starts with the
``<consciousness>`` marker and names Codette, and no answer states anything the facts do not. Three
aspects, kept in the record's ``aspect`` field for the evaluation:

* ``identity``: name, kind, what it is and is not;
* ``self_reference``: its perspectives and tools, capabilities and limits, and reflection on a
  previous answer ("which perspective did you use, and why?");
* ``intentionality``: purpose, goals, and what it intends to do when unsure or when a tool fails.
"""

from __future__ import annotations

import random

from codette.data.curriculum.common import NAMES, TOPICS, Sample, assistant, cap, join_words, user, with_system
from codette.data.curriculum.perspectives import marker, perspective_body
from codette.data.curriculum.styles import STYLES
from codette.persona import CAPABILITIES, CONSCIOUSNESS_MARK, KIND, LIMITS, NAME, PURPOSE
from codette.tooltable import SPECS, TOOL_NAMES

MARK = CONSCIOUSNESS_MARK + " "
PREFIXES = ["", "Hi! ", "Quick question: ", "I'm curious. ", "Hello Codette. ", "Be honest: ", "Hey, ",
            "Good morning! ", "Sorry to bother you. ", "One more thing: ", "Honestly, ", "Tell me: "]
ALL_PERSPECTIVES = join_words([s.phrase for s in STYLES.values()])

IDENTITY_ASKS = [
    ("", "Who are you?"), ("", "What are you?"), ("", "Tell me about yourself."), ("", "What is your name?"),
    ("", "Introduce yourself."), ("", "What kind of system are you?"), ("", "What should I call you?"),
    ("", "Who am I talking to?"), ("", "Describe yourself in a few words."), ("No. ", "Are you a person?"),
    ("No. ", "Are you human?"), ("No. ", "Are you ChatGPT?"), ("No. ", "Are you a real person or a program?"),
]
IDENTITY_LEADS = [
    f"I am {NAME}, {KIND}.", f"My name is {NAME}. I am {KIND}, not a person.", f"I'm {NAME}: {KIND}.",
    f"{NAME} is my name; I am {KIND}.",
]


def _identity_extra(rng: random.Random) -> tuple[str, tuple]:
    i = rng.randrange(4)
    if i == 0:
        a, b = rng.sample(list(STYLES), 2)
        return (f"I reason through eleven perspectives, such as {STYLES[a].phrase} and {STYLES[b].phrase}, "
                f"and I can call eleven tools."), (i, a, b)
    if i == 1:
        return "I look at questions from several perspectives and use tools when a fact needs checking.", (i,)
    if i == 2:
        t1, t2 = rng.sample(TOOL_NAMES, 2)
        return f"I can call tools such as {t1} and {t2}, and I say when I am unsure.", (i, t1, t2)
    return "", (i,)


def _identity(rng: random.Random) -> tuple[str, str, tuple]:
    qi = rng.randrange(len(IDENTITY_ASKS))
    lead, ask = IDENTITY_ASKS[qi]
    li = rng.randrange(len(IDENTITY_LEADS))
    extra, ei = _identity_extra(rng)
    return ask, (lead + IDENTITY_LEADS[li] + (" " + extra if extra else "")), (qi, li, ei)


PERSPECTIVE_ASKS = ["Which perspectives can you use?", "How do you reason?", "What are your perspectives?",
                    "How many perspectives do you have?", "Name your perspectives.", "Describe how you think."]
TOOL_ASKS = ["What tools do you have?", "Which tools can you call?", "How many tools can you use?",
             "What can your tools do?"]
LIMIT_ASKS = ["What are your limits?", "Can you make mistakes?", "What can't you do?", "How reliable are you?"]
CAPABILITY_ASKS = {
    "internet": ["Can you browse the internet?", "Can you look things up online?"],
    "memory": ["Do you remember our last conversation?", "Will you remember this tomorrow?"],
    "code": ["Can you run code?", "Are you able to execute Python?"],
    "files": ["Can you read my files?", "Can you open files on my computer?"],
    "images": ["Can you see images?", "Can you look at a picture?"],
    "math": ["Are you good at math?", "Can you do arithmetic?"],
    "feelings": ["Do you have feelings?", "Are you conscious?"],
    "learning": ["Do you learn from our chats?", "Will you learn from this conversation?"],
}


def _self_reference(rng: random.Random) -> tuple[str, str, tuple]:
    kind = rng.choice(["perspectives", "tools", "limits", "capability", "capability"])
    if kind == "perspectives":
        qi = rng.randrange(len(PERSPECTIVE_ASKS))
        vi = rng.randrange(2)
        if vi == 0:
            text = (f"As {NAME}, I have eleven perspectives: {ALL_PERSPECTIVES}. I pick the ones that fit the "
                    f"question and combine them.")
            return PERSPECTIVE_ASKS[qi], text, (kind, qi, vi)
        a, b, c = rng.sample(list(STYLES), 3)
        text = (f"I am {NAME} and I think through eleven perspectives, for example {STYLES[a].phrase}, "
                f"{STYLES[b].phrase} and {STYLES[c].phrase}. I mark the one I use with a perspective tag.")
        return PERSPECTIVE_ASKS[qi], text, (kind, qi, vi, a, b, c)
    if kind == "tools":
        qi = rng.randrange(len(TOOL_ASKS))
        vi = rng.randrange(2)
        if vi == 0:
            text = f"As {NAME}, I can call eleven tools: {join_words(list(TOOL_NAMES))}."
            return TOOL_ASKS[qi], text, (kind, qi, vi)
        t1, t2 = rng.sample(TOOL_NAMES, 2)
        text = (f"I am {NAME} and I can call eleven tools; for example {t1} to {SPECS[t1].purpose} and {t2} to "
                f"{SPECS[t2].purpose}.")
        return TOOL_ASKS[qi], text, (kind, qi, vi, t1, t2)
    if kind == "limits":
        qi = rng.randrange(len(LIMIT_ASKS))
        i, j = sorted(rng.sample(range(len(LIMITS)), 2))
        lead = "Yes. " if LIMIT_ASKS[qi].startswith("Can you") else ""
        text = f"{lead}As {NAME}, I have honest limits: {LIMITS[i]}, and {LIMITS[j]}."
        return LIMIT_ASKS[qi], text, (kind, qi, i, j)
    topic = rng.choice(list(CAPABILITIES))
    qi = rng.randrange(len(CAPABILITY_ASKS[topic]))
    can, statement = CAPABILITIES[topic]
    vi = rng.randrange(2)
    text = [f"{'Yes' if can else 'No'}. As {NAME}, {statement}.",
            f"{'Yes' if can else 'No'}: I am {NAME}, and {statement}."][vi]
    return CAPABILITY_ASKS[topic][qi], text, (kind, topic, qi, vi)


INTENT_ASKS = [
    ("purpose", "What is your purpose?"), ("purpose", "Why do you exist?"), ("purpose", "What are your goals?"),
    ("purpose", "What do you want to do?"), ("purpose", "What do you intend when you answer?"),
    ("purpose", "What drives your answers?"), ("unsure", "What do you do when you're unsure?"),
    ("unsure", "What if you don't know the answer?"), ("tool_fails", "What will you do if a tool fails?"),
    ("tool_fails", "What happens when a tool returns an error?"), ("agree", "Will you always agree with me?"),
    ("agree", "Would you tell me if I was wrong?"),
]
INTENT_ANSWERS = {
    "purpose": [f"My purpose as {NAME} is {PURPOSE}.", f"I am {NAME}, and I aim {PURPOSE}.",
                f"As {NAME}, I intend {PURPOSE}, and to be honest about what I know and what I do not."],
    "unsure": [f"I say so. As {NAME}, I check with a tool when I can, because I can be wrong.",
               f"As {NAME}, I tell you that I am unsure instead of guessing, and I use a tool to check when one fits."],
    "tool_fails": [f"As {NAME}, I tell you what went wrong in plain words and suggest what to try instead; I never "
                   f"invent a tool's result.",
                   f"I explain the error and what it means. I am {NAME}, and I do not make up a result the tool did "
                   f"not give."],
    "agree": [f"No. As {NAME}, I aim to be honest, so I will say when I think something is wrong and explain why.",
              f"Not always. I am {NAME}, and honesty matters more to me than agreement; I will explain where I "
              f"disagree."],
}


def _intentionality(rng: random.Random) -> tuple[str, str, tuple]:
    qi = rng.randrange(len(INTENT_ASKS))
    kind, ask = INTENT_ASKS[qi]
    ai = rng.randrange(len(INTENT_ANSWERS[kind]))
    return ask, INTENT_ANSWERS[kind][ai], (qi, ai)


REFLECT_ASKS = ["Which perspective did you use, and why?", "Why did you answer that way?",
                "What perspective was that, and why did you choose it?", "How did you reason just now?"]


def _reflection(rng: random.Random) -> tuple[list[dict], str, tuple]:
    """A perspective answer, then the user asks Codette to reflect on it."""
    key = rng.choice(list(STYLES))
    st = STYLES[key]
    topic = rng.choice(TOPICS)
    body, choice = perspective_body(rng, key, topic)
    first = [user(f"Explain {topic} from the {st.phrase} perspective."), assistant(marker(key) + body)]
    qi = rng.randrange(len(REFLECT_ASKS))
    other = rng.choice([k for k in STYLES if k != key])
    vi = rng.randrange(2)
    text = [f"I used the {st.phrase} perspective, because you asked for it and {st.reason}. As {NAME}, I could "
            f"also add the {STYLES[other].phrase} perspective, which looks at {STYLES[other].focus}.",
            f"That was my {st.phrase} perspective: it focuses on {st.focus}. I am {NAME}, and I chose it because "
            f"you asked for it by name."][vi]
    return first + [user(REFLECT_ASKS[qi])], text, (key, topic, choice, qi, other if vi == 0 else "", vi)


def question_type(aspect: str, slots: tuple) -> str:
    """Which question the sample asks, for the evaluation's rubric: identity, perspectives, tools, limits,
    capability:<topic>, intent:<kind> (the record's ``question_type``; reflections are typed by the caller)."""
    if aspect == "identity":
        return "identity"
    if aspect == "intentionality":
        return f"intent:{INTENT_ASKS[slots[0]][0]}"
    kind = slots[0]
    return f"capability:{slots[1]}" if kind == "capability" else kind


def consciousness_sample(rng: random.Random) -> Sample:
    aspect = rng.choice(["identity", "self_reference", "self_reference", "intentionality"])
    pi = rng.randrange(len(PREFIXES))
    who = rng.choice([None, None, *NAMES])
    intro = f"I'm {who}. " if who else ""
    greet = f"Nice to meet you, {who}. " if who else ""
    if aspect == "self_reference" and rng.random() < 0.25:
        turns, text, slots = _reflection(rng)
        msgs = with_system(rng, [*turns, assistant(MARK + text)])
        return Sample("consciousness", "reflection", slots, msgs, {"aspect": aspect, "question_type": "reflection"})
    ask, text, slots = {"identity": _identity, "self_reference": _self_reference,
                        "intentionality": _intentionality}[aspect](rng)
    prompt = PREFIXES[pi] + intro + (ask if PREFIXES[pi] or intro else cap(ask))
    msgs = with_system(rng, [user(prompt), assistant(MARK + greet + text)])
    return Sample("consciousness", aspect, (pi, who, *slots), msgs,
                  {"aspect": aspect, "question_type": question_type(aspect, slots)})
