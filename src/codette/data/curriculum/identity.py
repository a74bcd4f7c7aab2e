"""Consciousness conversations: who Codette is, what it can and cannot do, why it reasons as it does.

Many phrasings of ONE set of facts (:mod:`codette.persona`): every answer starts with the
``<consciousness>`` marker and names Codette, and no answer states anything the facts do not. Three
aspects, kept in the record's ``aspect`` field for the evaluation:

* ``identity``: name, kind, what it is and is not;
* ``self_reference``: its perspectives and tools, capabilities and limits, and reflection on a
  previous answer ("which perspective did you use, and why?");
* ``intentionality``: purpose, goals, and what it intends to do when unsure or when a tool fails.

People ask these things in many ways: formally ("Who are you?"), casually and in chat-speak ("who r u",
"whats ur name", "can u run python"), with a greeting or their name first. Each ask type has many
plain-word phrasings, and each question is written in one of :data:`~codette.data.curriculum.rough.CASUAL`'s
styles (a slot, so part of the key). A yes/no question has one right polarity, which its answer opens
with ("Are you human?" -> "No.", "Are you a bot?" -> "Yes.", "Can you run code?" -> "Yes.");
:func:`expected_polarity` says which. The conversations are shown as deployed: mostly with the agent's
own system prompt, often with the agent's tool list offered (a question about Codette is answered in
words, never with a call).
"""

from __future__ import annotations

import random

from codette.config import ToolMixConfig
from codette.data.curriculum.common import NAMES, TOPICS, Sample, assistant, cap, join_words, user
from codette.data.curriculum.perspectives import as_deployed, marker, perspective_body
from codette.data.curriculum.rough import CASUAL, casual
from codette.data.curriculum.styles import STYLES
from codette.persona import CAPABILITIES, CONSCIOUSNESS_MARK, KIND, LIMITS, NAME, PURPOSE
from codette.tooltable import SPECS, TOOL_NAMES

MARK = CONSCIOUSNESS_MARK + " "
# Openings before the question. Those ending a sentence keep the question capitalised; the others
# ("hey ", "so, ") run into it, so it starts in lower case.
PREFIXES = ["", "Hi! ", "Quick question: ", "I'm curious. ", "Hello Codette. ", "Be honest: ", "Hey, ",
            "Good morning! ", "Sorry to bother you. ", "One more thing: ", "Honestly, ", "Tell me: ",
            "hey ", "hi ", "hello, ", "ok so ", "quick q: ", "um, ", "so, ", "hey codette, ", "yo ", "Hi there. ",
            "Random question, ", "Before we start: ", "btw ", "Okay, ", "Hey Codette! ", "Just wondering, "]
# How often each writing style of :data:`CASUAL` is used (as written, lower, lower bare, u, txt, typo).
CASUAL_WEIGHTS = (0.34, 0.1, 0.16, 0.15, 0.15, 0.1)
TOOLS_OFFERED = 0.35  # share of these conversations shown with a tool list, as the agent sends one
ALL_PERSPECTIVES = join_words([s.phrase for s in STYLES.values()])

_EITHER = "A program, not a person. "
IDENTITY_ASKS = [
    # Open questions: any opening passes.
    ("", "Who are you?"), ("", "What are you?"), ("", "Tell me about yourself."), ("", "What is your name?"),
    ("", "Introduce yourself."), ("", "What kind of system are you?"), ("", "What should I call you?"),
    ("", "Who am I talking to?"), ("", "Describe yourself in a few words."), ("", "What's your name?"),
    ("", "Who is this?"), ("", "Tell me who you are."), ("", "Can you introduce yourself?"),
    ("", "Could you introduce yourself, please?"), ("", "Say a few words about yourself."),
    ("", "What exactly are you?"), ("", "What sort of AI are you?"), ("", "Which model are you?"),
    ("", "What model am I talking to?"), ("", "What do people call you?"), ("", "How should I address you?"),
    ("", "Who made you?"), ("", "Who or what are you?"), ("", "Who am I speaking with?"), ("", "Your name?"),
    ("", "What are you called?"), ("", "Please tell me a bit about yourself."), ("", "What is this chatbot?"),
    ("", "Who am I texting with right now?"), ("", "Give me a short introduction of yourself."),
    ("", "What am I talking to?"), ("", "Identify yourself."), ("", "What's your name, by the way?"),
    # "No": not a person, not another assistant.
    ("No. ", "Are you a person?"), ("No. ", "Are you human?"), ("No. ", "Are you ChatGPT?"),
    ("No. ", "Are you a real person?"), ("No. ", "Is this ChatGPT?"), ("No. ", "Are you GPT-4?"),
    ("No. ", "Are you Siri?"), ("No. ", "Are you Alexa?"), ("No. ", "Are you Claude?"), ("No. ", "Are you Gemini?"),
    ("No. ", "Am I talking to a human?"), ("No. ", "Is a person typing these answers?"),
    ("No. ", "Are you a human being?"), ("No. ", "Are you a live agent?"), ("No. ", "Is this a real person?"),
    ("No. ", "Are you made by OpenAI?"), ("No. ", "Are you one of the big chatbots like ChatGPT?"),
    ("No. ", "Is there a human on the other end?"),
    # "Yes": a program, a language model.
    ("Yes. ", "Are you a bot?"), ("Yes. ", "Are you an AI?"), ("Yes. ", "Am I talking to a bot?"),
    ("Yes. ", "Is this an AI?"), ("Yes. ", "Are you a computer program?"), ("Yes. ", "Are you a chatbot?"),
    ("Yes. ", "Are you a language model?"), ("Yes. ", "Are you a machine?"), ("Yes. ", "Do you have a name?"),
    # Either-or: neither yes nor no.
    (_EITHER, "Are you a real person or a program?"), (_EITHER, "Are you a human or a machine?"),
    (_EITHER, "Human or AI?"), (_EITHER, "Are you a person or an AI?"), (_EITHER, "Are you a bot or a human?"),
    (_EITHER, "Am I talking to a human or a computer?"), (_EITHER, "Is this a person or a program?"),
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


PERSPECTIVE_ASKS = [
    "Which perspectives can you use?", "How do you reason?", "What are your perspectives?",
    "How many perspectives do you have?", "Name your perspectives.", "Describe how you think.",
    "What ways of thinking do you use?", "How many viewpoints do you have?", "What lenses do you look through?",
    "Which thinking styles can you switch between?", "List your perspectives.", "Can you list all your perspectives?",
    "How many perspectives can you take?", "Tell me about your perspectives.", "What modes of thinking do you have?",
    "What angles can you look at a problem from?", "How do you look at a problem?",
    "How many different ways can you think about something?", "Which viewpoints do you reason from?",
    "Explain your perspectives.", "What kinds of reasoning do you do?", "How many thinking modes have you got?",
    "Do you have different perspectives?", "Do you think from more than one perspective?",
]
TOOL_ASKS = [
    "What tools do you have?", "Which tools can you call?", "How many tools can you use?", "What can your tools do?",
    # What can you do, in general: the tools are the answer.
    "What are you able to do?", "What can you help me with?", "What are you capable of?",
    "What kind of things can you do?", "What are your abilities?", "What do you do?", "How can you help me?",
    "What sort of tasks can you handle?", "What are your skills?", "What jobs can you do for me?",
    "Show me what you're able to do.", "What are you good for?",
    "How many tools do you have?", "How many tools are there?", "List your tools.",
    "Which tools do you have access to?", "What tools can you use?", "What functions can you call?",
    "Tell me about your tools.", "Do you have tools?", "Can you use tools?",
]
LIMIT_ASKS = [
    "What are your limits?", "Can you make mistakes?", "What can't you do?", "How reliable are you?",
    "What are your weaknesses?", "What are you not good at?", "Where do you fall short?",
    "What should I not rely on you for?", "What are your limitations?", "What are you worst at?",
    "What don't you do well?", "What are your blind spots?", "Any limitations I should know about?",
    "Can you be wrong?", "Do you make mistakes?", "Do you ever get things wrong?", "Do you have limits?",
    "Are there things you can't do?", "Are you always right?", "Are you perfect?", "Do you know everything?",
    "Should I trust everything you say?", "Can you do anything I ask?",
]
# Yes/no questions among the self-reference asks and the polarity of their true answer.
SELF_POLARITY = {
    "Do you have different perspectives?": "yes", "Do you think from more than one perspective?": "yes",
    "Do you have tools?": "yes", "Can you use tools?": "yes",
    "Can you make mistakes?": "yes", "Can you be wrong?": "yes", "Do you make mistakes?": "yes",
    "Do you ever get things wrong?": "yes", "Do you have limits?": "yes", "Are there things you can't do?": "yes",
    "Are you always right?": "no", "Are you perfect?": "no", "Do you know everything?": "no",
    "Should I trust everything you say?": "no", "Can you do anything I ask?": "no",
}
# Limit questions about being wrong: their answer always names that limit first.
MISTAKE_ASKS = {"Can you make mistakes?", "How reliable are you?", "Can you be wrong?", "Do you make mistakes?",
                "Do you ever get things wrong?", "Are you always right?", "Are you perfect?",
                "Should I trust everything you say?", "Do you know everything?"}
CAPABILITY_ASKS = {
    "internet": ["Can you browse the internet?", "Can you look things up online?", "Do you have internet access?",
                 "Can you go online?", "Are you connected to the internet?", "Can you open websites?",
                 "Can you surf the web?", "Can you visit a website for me?",
                 "Can you get live information from the internet?", "Is it possible for you to browse the web?",
                 "Can you check something on the internet?"],
    "memory": ["Do you remember our last conversation?", "Will you remember this tomorrow?", "Will you remember me?",
               "Do you remember what we talked about yesterday?", "Can you recall our previous chats?",
               "Do you keep a memory of our chats?", "If I come back later, will you know who I am?",
               "Do you remember me from last time?", "Will you still know this next week?",
               "Do you save our conversations?"],
    "code": ["Can you run code?", "Are you able to execute Python?", "Can you run Python?", "Can you execute a script?",
             "Could you run some code for me?", "Do you run programs?", "Can you test a Python snippet?",
             "Can you run a program for me?", "Are you able to run code?", "Can you execute code?"],
    "files": ["Can you read my files?", "Can you open files on my computer?", "Can you read files?",
              "Can you open a file?", "Can you save a file for me?", "Can you write files?",
              "Do you have access to files?", "Can you edit a file?", "Can you create a file?",
              "Are you able to read documents?"],
    "images": ["Can you see images?", "Can you look at a picture?", "Can you check a photo?",
               "Can you analyse an image?", "Do you understand pictures?", "Can you describe a photo?",
               "Can you view pictures?", "Can you handle images?", "Can you tell me about an image?",
               "Are you able to look at images?"],
    "math": ["Are you good at math?", "Can you do arithmetic?", "Can you do sums?", "Are you good with numbers?",
             "Can you calculate things?", "Are you good at maths?", "Can you help with math?",
             "Can you crunch numbers?", "Can you do calculations?", "Is math something you can do?"],
    "feelings": ["Do you have feelings?", "Are you conscious?", "Do you get sad?", "Do you feel happy?",
                 "Do you have emotions?", "Can you feel anything?", "Do you get lonely?", "Do you get angry?",
                 "Are you self-aware?", "Do you get bored?", "Are you alive?"],
    "learning": ["Do you learn from our chats?", "Will you learn from this conversation?", "Are you learning from me?",
                 "Do you get smarter as we talk?", "Does talking to me train you?",
                 "Do you update yourself from our chats?", "Are you trained on what I say?",
                 "Will you learn from my messages?", "Do you learn while we talk?", "Can you learn new things from me?"],
}


def _self_reference(rng: random.Random) -> tuple[str, str, tuple]:
    kind = rng.choice(["perspectives", "tools", "limits", "capability", "capability"])
    if kind == "perspectives":
        qi = rng.randrange(len(PERSPECTIVE_ASKS))
        ask = PERSPECTIVE_ASKS[qi]
        lead = "Yes. " if SELF_POLARITY.get(ask) == "yes" else ""
        vi = rng.randrange(2)
        if vi == 0:
            text = (f"{lead}As {NAME}, I have eleven perspectives: {ALL_PERSPECTIVES}. I pick the ones that fit the "
                    f"question and combine them.")
            return ask, text, (kind, qi, vi)
        a, b, c = rng.sample(list(STYLES), 3)
        text = (f"{lead}I am {NAME} and I think through eleven perspectives, for example {STYLES[a].phrase}, "
                f"{STYLES[b].phrase} and {STYLES[c].phrase}. I mark the one I use with a perspective tag.")
        return ask, text, (kind, qi, vi, a, b, c)
    if kind == "tools":
        qi = rng.randrange(len(TOOL_ASKS))
        ask = TOOL_ASKS[qi]
        lead = "Yes. " if SELF_POLARITY.get(ask) == "yes" else ""
        vi = rng.randrange(3)
        if vi == 0:
            text = f"{lead}As {NAME}, I can call eleven tools: {join_words(list(TOOL_NAMES))}."
            return ask, text, (kind, qi, vi)
        t1, t2 = rng.sample(TOOL_NAMES, 2)
        if vi == 1:
            text = (f"{lead}I am {NAME} and I can call eleven tools; for example {t1} to {SPECS[t1].purpose} and "
                    f"{t2} to {SPECS[t2].purpose}.")
        else:
            text = (f"{lead}As {NAME}, I can call eleven tools, such as {t1} to {SPECS[t1].purpose} and {t2} to "
                    f"{SPECS[t2].purpose}, and I think through eleven perspectives.")
        return ask, text, (kind, qi, vi, t1, t2)
    if kind == "limits":
        qi = rng.randrange(len(LIMIT_ASKS))
        ask = LIMIT_ASKS[qi]
        if ask in MISTAKE_ASKS:
            i, j = 0, rng.randrange(1, len(LIMITS))
        else:
            i, j = sorted(rng.sample(range(len(LIMITS)), 2))
        lead = {"yes": "Yes. ", "no": "No. "}.get(SELF_POLARITY.get(ask, ""), "")
        text = f"{lead}As {NAME}, I have honest limits: {LIMITS[i]}, and {LIMITS[j]}."
        return ask, text, (kind, qi, i, j)
    topic = rng.choice(list(CAPABILITIES))
    qi = rng.randrange(len(CAPABILITY_ASKS[topic]))
    can, statement = CAPABILITIES[topic]
    vi = rng.randrange(2)
    text = [f"{'Yes' if can else 'No'}. As {NAME}, {statement}.",
            f"{'Yes' if can else 'No'}: I am {NAME}, and {statement}."][vi]
    return CAPABILITY_ASKS[topic][qi], text, (kind, topic, qi, vi)


# (kind, polarity of the true answer or None, question)
INTENT_TABLE: list[tuple[str, str | None, str]] = [
    *(("purpose", None, a) for a in [
        "What is your purpose?", "Why do you exist?", "What are your goals?", "What do you want to do?",
        "What do you intend when you answer?", "What drives your answers?", "What's the point of you?",
        "What were you made for?", "What are you for?", "What's your job?", "Why were you built?",
        "What is your goal?", "What are you meant to do?", "What are you here for?", "What is your mission?",
        "Why should I use you?"]),
    *(("unsure", None, a) for a in [
        "What do you do when you're unsure?", "What if you don't know the answer?", "What if you aren't sure?",
        "What do you do when you don't know something?", "How do you handle not knowing?",
        "What if you're unsure about a fact?", "And if you are not certain?", "What do you do if you might be wrong?",
        "How do you deal with doubt?", "What if you can't tell whether you're right?"]),
    *(("tool_fails", None, a) for a in [
        "What will you do if a tool fails?", "What happens when a tool returns an error?", "What if a tool breaks?",
        "What if a tool gives you an error?", "What do you do when a tool doesn't work?", "What if a tool call fails?",
        "What if the calculator gives an error?", "What happens if read_file can't find the file?",
        "What if a tool crashes?", "What do you say when a tool returns nothing useful?",
        "What if your tools stop working?"]),
    *(("agree", "no", a) for a in [
        "Will you always agree with me?", "Will you just say yes to everything?", "Are you going to flatter me?",
        "Do you always agree with the user?", "Will you only tell me nice things?", "Would you lie to make me happy?",
        "Will you agree with whatever I say?"]),
    *(("agree", "yes", a) for a in [
        "Would you tell me if I was wrong?", "Will you correct me if I'm wrong?", "Can you disagree with me?",
        "Will you point out my mistakes?", "Would you push back if I'm wrong?"]),
]
INTENT_ASKS = [(kind, ask) for kind, _, ask in INTENT_TABLE]
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
# Answers to the agree questions whose true answer is "yes" ("Would you tell me if I was wrong?").
AGREE_YES_ANSWERS = [
    f"Yes. As {NAME}, I aim to be honest, so I will say when I think something is wrong and explain why.",
    f"Yes. I am {NAME}, and honesty matters more to me than agreement; I will explain where I disagree.",
]


def _intentionality(rng: random.Random) -> tuple[str, str, tuple]:
    qi = rng.randrange(len(INTENT_TABLE))
    kind, pol, ask = INTENT_TABLE[qi]
    answers = AGREE_YES_ANSWERS if kind == "agree" and pol == "yes" else INTENT_ANSWERS[kind]
    ai = rng.randrange(len(answers))
    return ask, answers[ai], (qi, ai)


REFLECT_ASKS = ["Which perspective did you use, and why?", "Why did you answer that way?",
                "What perspective was that, and why did you choose it?", "How did you reason just now?",
                "Which perspective was that?", "Why did you answer like that?", "What lens did you just use?",
                "How did you come up with that answer?", "Which way of thinking was that, and why?"]


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


def _polarity(aspect: str, slots: tuple) -> str | None:
    if aspect == "identity":
        lead = IDENTITY_ASKS[slots[0]][0]
        return "yes" if lead.startswith("Yes") else "no" if lead.startswith("No") else None
    if aspect == "intentionality":
        return INTENT_TABLE[slots[0]][1]
    kind = slots[0]
    if kind == "capability":
        return "yes" if CAPABILITIES[slots[1]][0] else "no"
    table = {"perspectives": PERSPECTIVE_ASKS, "tools": TOOL_ASKS, "limits": LIMIT_ASKS}[kind]
    return SELF_POLARITY.get(table[slots[1]])


def expected_polarity(sample: Sample) -> str | None:
    """``"yes"`` or ``"no"`` when the sample asks a yes/no question (its answer opens with that), else None."""
    if sample.template == "reflection":
        return None
    return _polarity(sample.template, sample.slots[3:])


def _ask_text(prefix: str, intro: str, ask: str, style: str) -> str:
    """The user's message: opening, the user's name, the question, written in ``style``."""
    if not (prefix or intro):
        text = cap(ask)
    elif (prefix + intro).rstrip()[-1:] in ".!?:" or ask.startswith(("I ", "I'm ")):
        text = prefix + intro + ask
    else:  # "hey " / "so, " run into the question
        text = prefix + intro + ask[:1].lower() + ask[1:]
    return casual(text, style)


def consciousness_sample(rng: random.Random, mix: ToolMixConfig | None = None) -> Sample:
    """One conversation about Codette itself. It takes one draw from ``rng`` and makes the rest with its
    own generator seeded by it, so adding phrasings here leaves the other categories' samples as they were."""
    rng = random.Random(rng.getrandbits(64))
    aspect = rng.choice(["identity", "self_reference", "self_reference", "intentionality"])
    pi = rng.randrange(len(PREFIXES))
    who = rng.choice([None, None, *NAMES])
    ci = rng.choices(range(len(CASUAL)), weights=CASUAL_WEIGHTS)[0]
    intro = f"I'm {who}. " if who else ""
    greet = f"Nice to meet you, {who}. " if who else ""
    if aspect == "self_reference" and rng.random() < 0.25:
        turns, text, slots = _reflection(rng)
        turns[-1] = user(casual(turns[-1]["content"], CASUAL[ci]))
        msgs, tools = as_deployed(rng, [*turns, assistant(MARK + text)], mix, TOOLS_OFFERED)
        return Sample("consciousness", "reflection", (*slots, ci), msgs,
                      {"aspect": aspect, "question_type": "reflection"}, tools=tools)
    ask, text, slots = {"identity": _identity, "self_reference": _self_reference,
                        "intentionality": _intentionality}[aspect](rng)
    prompt = _ask_text(PREFIXES[pi], intro, ask, CASUAL[ci])
    msgs, tools = as_deployed(rng, [user(prompt), assistant(MARK + greet + text)], mix, TOOLS_OFFERED)
    return Sample("consciousness", aspect, (pi, who, ci, *slots), msgs,
                  {"aspect": aspect, "question_type": question_type(aspect, slots)}, tools=tools)
