"""Perspective conversations: the user names one of the eleven perspectives, Codette answers in its style.

An answer starts with ``<perspective> <key>`` and is built from that perspective's opener, reasoning
step(s) and closer (:mod:`codette.data.curriculum.styles`). Perspectives with a quantitative side
also get numeric problems whose numbers are computed here: kinematics for Newton, algebra and unit
conversions for the mathematical perspective, probabilities for quantum computing, and so on.

People name a perspective in many ways: "the Newton perspective", "newton angle on ...", "think like
Da Vinci about ...", "philosophically, ...", "maths view of ...". Each perspective has label, adverb
and person forms (:data:`LABELS`, :data:`ADVERBS`, :data:`WHO`) that the requests use, on everyday
topics as well as the shared ones, written formally or casually (:func:`~codette.data.curriculum.rough.casual`).
The conversations are shown as deployed (:func:`as_deployed`): mostly with the agent's system prompt,
often with its tool list offered, and the answer is still the perspective's, with no call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from codette.config import ToolMixConfig
from codette.data.curriculum.common import (TOPICS, Sample, assistant, cap, fmt, fmt_big, pct, user,
                                            with_agent_system)
from codette.data.curriculum.rough import CASUAL, casual
from codette.data.curriculum.styles import STYLES
from codette.data.curriculum.tools.lists import tools_for

G = 9.81

ASKS = [
    "How would the {P} perspective see {t}?",
    "Explain {t} from the {P} perspective.",
    "Use your {P} perspective on {t}.",
    "What does {t} look like through the {P} lens?",
    "Give me the {P} view of {t}.",
    "Think about {t} using the {P} perspective.",
    "{Pc} perspective, please: {t}.",
    "Analyse {t} with your {P} perspective.",
    "I'd like the {P} take on {t}.",
    "Describe {t} the way your {P} perspective would.",
    # Casual and short forms; {L}: a label ("newton", "maths", "gut feeling"), {A}: an adverb
    # ("philosophically", "like Newton"), {W}: a person or thing that reasons that way ("a mathematician").
    "{L} perspective on {t}?",
    "{L} view on {t}",
    "{L} angle on {t}, please",
    "Give me the {L} angle on {t}.",
    "What's the {L} take on {t}?",
    "{L} lens: {t}",
    "{L} mode: think about {t}",
    "{L} style: talk me through {t}",
    "Look at {t} with your {L} hat on.",
    "Switch to {L} and look at {t}.",
    "Through the {L} lens, what about {t}?",
    "Using {L}, what do you make of {t}?",
    "What would your {L} side say about {t}?",
    "{L} thoughts on {t}?",
    "Talk about {t} in {L} terms.",
    "I want the {L} answer about {t}.",
    "{L} please: {t}",
    "Apply {L} thinking to {t}.",
    "Run {t} through your {L} perspective.",
    "What does {L} thinking say about {t}?",
    "Quick {L} read on {t}?",
    "Can you do {t} from the {L} angle?",
    "{A}, what about {t}?",
    "{A}, what is going on with {t}?",
    "Think about {t} {A}.",
    "Explain {t} {A}.",
    "How would you see {t} {A}?",
    "Look at {t} {A}, please.",
    "Think like {W} about {t}.",
    "How would {W} see {t}?",
    "What would {W} say about {t}?",
    "Explain {t} the way {W} would.",
    "Channel {W} and look at {t}.",
    "If you were {W}, how would you look at {t}?",
    "{L} check: {t}",
    "Do a {L} pass over {t}.",
]
# How people name each perspective: labels (in "{L} angle", "the {L} lens"), adverbs, and who reasons so.
LABELS: dict[str, list[str]] = {
    "newton": ["Newton", "newton", "Newtonian", "Isaac Newton"],
    "davinci": ["Da Vinci", "da vinci", "Leonardo", "Leonardo da Vinci", "DaVinci"],
    "human_intuition": ["human intuition", "intuition", "intuitive", "gut-feeling"],
    "quantum_computing": ["quantum computing", "quantum", "quantum computer", "quantum-computing"],
    "philosophical": ["philosophical", "philosophy", "philosophic"],
    "neural_network": ["neural network", "neural net", "neural-net", "neural networks"],
    "bias_mitigation": ["bias mitigation", "bias-mitigation", "fairness", "anti-bias"],
    "psychological": ["psychological", "psychology", "psych"],
    "copilot": ["copilot", "co-pilot", "Copilot"],
    "mathematical": ["mathematical", "math", "maths", "mathematics"],
    "symbolic": ["symbolic", "symbolic logic", "logic", "logical"],
}
ADVERBS: dict[str, list[str]] = {
    "newton": ["like Newton", "Newton-style", "the Newton way"],
    "davinci": ["like Da Vinci", "Da Vinci-style", "the way Leonardo would"],
    "human_intuition": ["intuitively", "going by gut feeling", "on human intuition"],
    "quantum_computing": ["like a quantum computer", "quantum-style", "in quantum terms"],
    "philosophical": ["philosophically", "like a philosopher", "in philosophical terms"],
    "neural_network": ["like a neural network", "neural-network style", "in neural network terms"],
    "bias_mitigation": ["with fairness in mind", "with an eye on bias", "in bias mitigation terms"],
    "psychological": ["psychologically", "like a psychologist", "in psychological terms"],
    "copilot": ["as my copilot", "in copilot mode", "copilot-style"],
    "mathematical": ["mathematically", "like a mathematician", "in maths terms"],
    "symbolic": ["symbolically", "logically", "in symbolic terms"],
}
WHO: dict[str, list[str]] = {
    "newton": ["Newton", "Isaac Newton", "a physicist like Newton"],
    "davinci": ["Da Vinci", "Leonardo", "Leonardo da Vinci"],
    "human_intuition": ["someone going on intuition", "a person trusting their instinct"],
    "quantum_computing": ["a quantum computer", "a quantum computing expert"],
    "philosophical": ["a philosopher", "an old philosopher"],
    "neural_network": ["a neural network", "a neural net"],
    "bias_mitigation": ["a bias mitigation expert", "someone checking for bias"],
    "psychological": ["a psychologist", "a psychology expert"],
    "copilot": ["a copilot", "my copilot"],
    "mathematical": ["a mathematician", "a maths teacher"],
    "symbolic": ["a logician", "a symbolic logic expert"],
}
# Everyday subjects beside the shared topics (people ask about their own lives more than about bridges).
EVERYDAY = [
    "a leaky tap", "a crowded train", "a morning alarm", "a garden fence", "a weekend hike", "a shopping list",
    "a noisy neighbour", "a burnt piece of toast", "a lost umbrella", "a group chat", "a board game night",
    "a new bike lane", "a phone battery that dies early", "a rainy commute", "a waiting room", "a cluttered garage",
    "a late train", "a houseplant that keeps wilting", "a first driving lesson", "a family dinner",
    "a gym membership", "a long email thread", "a cold shower", "a power cut", "a flat tyre", "a pot of soup",
    "a sunrise", "a dog that barks at night", "a neighbourhood cleanup", "a rent increase", "a school timetable",
    "a rooftop garden", "a noisy fridge", "a traffic light", "a stack of unread books", "a new pair of shoes",
    "a morning jog", "a video call", "a wedding speech", "a broken zip", "a crowded beach", "a slow laptop",
    "a recycling bin", "a packed suitcase", "a house move across town", "a missed bus", "a dripping umbrella",
]
# How often each writing style of :data:`CASUAL` is used (as written, lower, lower bare, u, txt, typo).
CASUAL_WEIGHTS = (0.4, 0.12, 0.18, 0.1, 0.1, 0.1)
TOOLS_OFFERED = 0.35  # share of conversations shown with a tool list, as the agent sends one
# Ways to name a perspective before a numeric question.
NUMERIC_PREFIXES = [
    "Using the {P} perspective, ", "From the {P} perspective: ", "{Pc} perspective, please. ",
    "With your {P} perspective, ", "{L} angle: ", "{L} mode, ", "{A}, ", "Think like {W}: ", "{L} view please. ",
]

OBJECTS = ["ball", "stone", "apple", "wrench", "book", "marble", "cup", "key", "coin", "shoe", "brick", "melon"]
VEHICLES = ["car", "bicycle", "train", "cart", "sled", "scooter", "boat", "truck"]


# ------------------------------------------------------------------------------------------------
# Numeric problems: each returns (question, worked answer, slots). Numbers are computed, not typed.
# ------------------------------------------------------------------------------------------------
def _newton_fall(rng: random.Random) -> tuple[str, str, tuple]:
    obj, h = rng.choice(OBJECTS), rng.randint(1, 300)
    t = math.sqrt(2 * h / G)
    q = f"how long does {'an' if obj[0] in 'aeiou' else 'a'} {obj} dropped from {h} m take to land?"
    a = (f"Ignoring air resistance, gravity accelerates the {obj} at g = 9.81 m/s^2. From h = g t^2 / 2, "
         f"t = sqrt(2 * {h} / 9.81) = {fmt(t)} s, and it lands at v = g t = {fmt(G * t)} m/s.")
    return q, a, (obj, h)


def _newton_force(rng: random.Random) -> tuple[str, str, tuple]:
    veh, m, acc = rng.choice(VEHICLES), rng.randint(2, 2000), rng.randint(1, 12) / 2
    q = f"what force accelerates a {m} kg {veh} at {fmt(acc)} m/s^2?"
    a = f"By the second law, F = m a = {m} kg * {fmt(acc)} m/s^2 = {fmt_big(m * acc)} N."
    return q, a, (veh, m, acc)


def _newton_energy(rng: random.Random) -> tuple[str, str, tuple]:
    obj, m, v = rng.choice(OBJECTS + VEHICLES), rng.randint(1, 1500), rng.randint(1, 40)
    q = f"how much kinetic energy does a {m} kg {obj} moving at {v} m/s carry?"
    a = (f"Kinetic energy is E = m v^2 / 2 = {m} * {v}^2 / 2 = {fmt_big(m * v * v / 2)} J, and that energy "
         f"must go somewhere when it stops.")
    return q, a, (obj, m, v)


def _newton_momentum(rng: random.Random) -> tuple[str, str, tuple]:
    veh, m, kmh = rng.choice(VEHICLES), rng.randint(5, 3000), rng.randint(5, 120)
    v = kmh / 3.6
    q = f"what is the momentum of a {m} kg {veh} at {kmh} km/h?"
    a = (f"First convert the speed: {kmh} km/h / 3.6 = {fmt(v)} m/s. Momentum is p = m v = {m} * {fmt(v)} = "
         f"{fmt_big(m * v)} kg m/s.")
    return q, a, (veh, m, kmh)


def _davinci_golden(rng: random.Random) -> tuple[str, str, tuple]:
    thing, w = rng.choice(["picture frame", "window", "door", "table top", "book cover", "garden bed"]), rng.randint(10, 300)
    phi = (1 + math.sqrt(5)) / 2
    q = f"how tall should a {thing} {w} cm wide be to look well proportioned?"
    a = (f"Use the golden proportion, about 1.618: height = {w} * 1.618 = {fmt(w * phi)} cm. The eye reads "
         f"that ratio as balanced, in nature and in design.")
    return q, a, (thing, w)


def _davinci_scale(rng: random.Random) -> tuple[str, str, tuple]:
    thing, length, k = rng.choice(["bridge", "tower", "ship", "wing", "cathedral", "windmill"]), rng.randint(5, 400), \
        rng.choice([10, 20, 25, 50, 100, 200])
    q = f"how long is a 1:{k} model of a {length} m {thing}?"
    a = (f"At 1:{k}, every length is divided by {k}: {length} m / {k} = {fmt(length / k * 100)} cm. Build the model "
         f"first, and the drawing becomes an invention you can test.")
    return q, a, (thing, length, k)


def _quantum_qubits(rng: random.Random) -> tuple[str, str, tuple]:
    n = rng.randint(1, 40)
    q = f"how many basis states can {n} qubits hold in superposition?"
    a = (f"Each qubit doubles the count, so {n} qubits span 2^{n} = {2 ** n:,} basis states, all present in one "
         f"superposition until measurement.")
    return q, a, (n,)


def _quantum_amplitude(rng: random.Random) -> tuple[str, str, tuple]:
    amp = rng.randint(1, 99) / 100
    p0 = amp * amp
    q = f"a qubit has amplitude {fmt(amp)} for state 0. What are the measurement probabilities?"
    a = (f"The probability is the squared amplitude: P(0) = {fmt(amp)}^2 = {fmt(p0 * 100)}%, so "
         f"P(1) = 100% - {fmt(p0 * 100)}% = {fmt(100 - p0 * 100)}%.")
    return q, a, (amp,)


def _quantum_coins(rng: random.Random) -> tuple[str, str, tuple]:
    k = rng.randint(1, 12)
    q = f"what is the probability that {k} fair coin flips all land heads?"
    p = 0.5 ** k
    a = f"Each flip is an equal superposition of two outcomes, so P = 0.5^{k} = 1/{2 ** k} = {fmt(p * 100)}%."
    return q, a, (k,)


def _neural_accuracy(rng: random.Random) -> tuple[str, str, tuple]:
    total = rng.randint(20, 1000)
    correct = rng.randint(total // 3, total)
    q = f"a classifier got {correct} of {total} test examples right. How good is it?"
    a = (f"Accuracy = {correct} / {total} = {pct(correct / total)}. Measured on held-out examples, that "
         f"number shows how well the learned patterns generalise.")
    return q, a, (correct, total)


def _neural_params(rng: random.Random) -> tuple[str, str, tuple]:
    n_in, n_out = rng.choice([2, 4, 8, 16, 32, 64, 128, 256, 512]), rng.choice([1, 2, 4, 10, 16, 32, 64, 128])
    q = f"how many parameters does a dense layer with {n_in} inputs and {n_out} outputs have?"
    a = (f"Each output has one weight per input plus a bias: {n_in} * {n_out} + {n_out} = "
         f"{n_in * n_out + n_out:,} parameters in the layer.")
    return q, a, (n_in, n_out)


def _bias_share(rng: random.Random) -> tuple[str, str, tuple]:
    group = rng.choice(["women", "older adults", "rural residents", "students", "left-handed people",
                        "non-native speakers", "night-shift workers"])
    n = rng.randint(20, 500)
    g = rng.randint(1, n - 1)
    pop = rng.randint(10, 60)
    share = 100 * g / n
    q = f"a survey of {n} people included {g} {group}, who are {pop}% of the population. Is that fair?"
    verdict = ("under-represented" if share < pop - 2 else "over-represented" if share > pop + 2
               else "represented about fairly")
    a = (f"{cap(group)} are {g} / {n} = {fmt(share)}% of the sample against {pop}% of the population, so "
         f"they are {verdict} (a gap of {fmt(abs(share - pop))} points).")
    return q, a, (group, n, g, pop)


def _psych_habit(rng: random.Random) -> tuple[str, str, tuple]:
    act, mins, days = rng.choice(["reading", "stretching", "practising guitar", "walking", "journaling",
                                  "studying a language"]), rng.choice([5, 10, 15, 20, 25, 30, 45]), rng.randint(7, 90)
    total = mins * days
    q = f"is {mins} minutes of {act} a day for {days} days worth the effort?"
    a = (f"{mins} minutes * {days} days = {total} minutes, about {fmt(total / 60)} hours. Small daily rewards "
         f"build the habit, and the motivation grows as the progress becomes visible.")
    return q, a, (act, mins, days)


def _copilot_schedule(rng: random.Random) -> tuple[str, str, tuple]:
    tasks = rng.sample(["write the outline", "collect the data", "draft the email", "fix the tests",
                        "review the budget", "book the room", "update the slides", "call the client"], rng.randint(2, 4))
    mins = [rng.choice([10, 15, 20, 25, 30, 40, 45, 60]) for _ in tasks]
    start = rng.randint(7, 16)
    total = sum(mins)
    end_h, end_m = divmod(start * 60 + total, 60)
    parts = ", ".join(f"{t} ({m} min)" for t, m in zip(tasks, mins))
    q = f"I start at {start}:00 and need to {' and '.join(tasks)}. When will I be done?"
    a = (f"Plan: {parts}. Total {' + '.join(map(str, mins))} = {total} minutes, so you finish at "
         f"{end_h}:{end_m:02d}. Start with the first task now.")
    return q, a, (tuple(tasks), tuple(mins), start)


def _math_linear(rng: random.Random) -> tuple[str, str, tuple]:
    a_, x = rng.choice([n for n in range(-9, 13) if n not in (0, 1)]), rng.randint(-20, 30)
    b = rng.randint(-50, 50)
    c = a_ * x + b
    sb = f"+ {b}" if b >= 0 else f"- {-b}"
    q = f"solve {a_}x {sb} = {c}."
    a = (f"Let x be the unknown. Subtract {b}: {a_}x = {c} - ({b}) = {c - b}. Divide by {a_}: "
         f"x = {c - b} / {a_} = {x}. Check: {a_} * {x} {sb} = {c}.")
    return q, a, (a_, b, c)


def _math_circle(rng: random.Random) -> tuple[str, str, tuple]:
    r = rng.randint(1, 50)
    q = f"what are the area and circumference of a circle with radius {r} cm?"
    a = (f"Define r = {r} cm. Area = pi r^2 = 3.1416 * {r * r} = {fmt(math.pi * r * r)} cm^2, and "
         f"circumference = 2 pi r = {fmt(2 * math.pi * r)} cm.")
    return q, a, (r,)


def _math_convert(rng: random.Random) -> tuple[str, str, tuple]:
    kind = rng.choice(["km", "kg", "c"])
    if kind == "km":
        v = rng.randint(1, 500)
        q = f"how many miles is {v} km?"
        a = f"One km is 0.621371 miles, so {v} km * 0.621371 = {fmt(v * 0.621371)} miles."
    elif kind == "kg":
        v = rng.randint(1, 300)
        q = f"how many pounds is {v} kg?"
        a = f"One kg is 2.20462 pounds, so {v} kg * 2.20462 = {fmt(v * 2.20462)} lb."
    else:
        v = rng.randint(-40, 100)
        q = f"what is {v} degrees Celsius in Fahrenheit?"
        a = f"The formula is F = C * 9/5 + 32, so F = {v} * 1.8 + 32 = {fmt(v * 1.8 + 32)} degrees Fahrenheit."
    return q, a, (kind, v)


def _math_percent(rng: random.Random) -> tuple[str, str, tuple]:
    price, off = rng.randint(5, 900), rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75])
    q = f"what does a {price} euro item cost after a {off}% discount?"
    cut = price * off / 100
    a = f"The discount is {price} * {off} / 100 = {fmt(cut)} euro, therefore the price is {price} - {fmt(cut)} = {fmt(price - cut)} euro."
    return q, a, (price, off)


CATEGORIES = [("birds", "animals", "a sparrow"), ("squares", "rectangles", "this shape"), ("roses", "flowers", "this plant"),
              ("whales", "mammals", "Moby"), ("poets", "writers", "Rumi"), ("metals", "conductors", "copper"),
              ("violins", "instruments", "this violin"), ("primes greater than 2", "odd numbers", "7"),
              ("pilots", "trained people", "Ada"), ("oaks", "trees", "that oak")]


def _symbolic_syllogism(rng: random.Random) -> tuple[str, str, tuple]:
    i = rng.randrange(len(CATEGORIES))
    a_, b, x = CATEGORIES[i]
    valid = rng.random() < 0.6
    if valid:
        q = f"all {a_} are {b}, and {x} is one of the {a_}. Is {x} one of the {b}?"
        a = (f"Premise 1: every A is B. Premise 2: {x} is A. By the rule, the conclusion follows: {x} is one "
             f"of the {b}.")
    else:
        q = f"all {a_} are {b}, and {x} is one of the {b}. Is {x} one of the {a_}?"
        a = (f"Premise 1: every A is B. Premise 2: {x} is B. No rule lets us infer A from B, so the conclusion "
             f"does not follow: {x} may or may not be one of the {a_}.")
    return q, a, (i, valid)


def _symbolic_truth(rng: random.Random) -> tuple[str, str, tuple]:
    n = rng.randint(1, 8)
    letters = "PQRSTUVW"[:n]
    q = f"how many rows does a truth table for {n} proposition{'s' if n > 1 else ''} ({', '.join(letters)}) need?"
    a = (f"Each symbol is either true or false, so the rules give 2^{n} = {2 ** n} rows, one for every "
         f"assignment of {', '.join(letters)}.")
    return q, a, (n,)


NUMERIC: dict[str, list[Callable[[random.Random], tuple[str, str, tuple]]]] = {
    "newton": [_newton_fall, _newton_force, _newton_energy, _newton_momentum],
    "davinci": [_davinci_golden, _davinci_scale],
    "quantum_computing": [_quantum_qubits, _quantum_amplitude, _quantum_coins],
    "neural_network": [_neural_accuracy, _neural_params],
    "bias_mitigation": [_bias_share],
    "psychological": [_psych_habit],
    "copilot": [_copilot_schedule],
    "mathematical": [_math_linear, _math_circle, _math_convert, _math_percent],
    "symbolic": [_symbolic_syllogism, _symbolic_truth],
}
NUMERIC_SHARE = 0.4  # of perspective samples whose perspective has numeric problems


def marker(key: str) -> str:
    return f"<perspective> {key}\n"


def perspective_body(rng: random.Random, key: str, topic: str) -> tuple[str, tuple]:
    """Opener, one or two reasoning steps about ``topic`` and a closer; returns (text, choice ids)."""
    st = STYLES[key]
    o, c = rng.randrange(len(st.openers)), rng.randrange(len(st.closers))
    moves = rng.sample(range(len(st.moves)), rng.choice([1, 1, 2]))
    steps = " ".join(st.moves[m].format(t=topic, T=cap(topic)) for m in moves)
    return f"{st.openers[o]} {steps} {st.closers[c]}", (o, tuple(moves), c)


def pick_perspective(rng: random.Random) -> str:
    return rng.choice(list(STYLES))


def as_deployed(rng: random.Random, turns: list[dict], mix: ToolMixConfig | None = None,
                share: float = TOOLS_OFFERED) -> tuple[list[dict], list[dict]]:
    """The conversation as the agent shows it: its system prompt (:func:`with_agent_system`: mostly the
    agent's own) and, in ``share`` of the conversations, the tool list it offers (the tool curriculum's
    :func:`tools_for`, no tool named), else ``[]`` (decided: none shown, so the synthetic stage adds
    none). Decoration, not part of the key: a question that needs no tool is answered in words even
    while tools are offered."""
    msgs = with_agent_system(rng, turns)
    tools = tools_for(rng, None, mix or ToolMixConfig()) if rng.random() < share else []
    return msgs, tools


def _names(rng: random.Random, key: str, template: str) -> tuple[dict[str, str], int]:
    """The names ``template`` uses for perspective ``key`` and which form was drawn (a slot)."""
    st = STYLES[key]
    forms = LABELS[key] if "{L}" in template else ADVERBS[key] if "{A}" in template else \
        WHO[key] if "{W}" in template else [st.phrase]
    ni = rng.randrange(len(forms))
    return {"P": st.phrase, "Pc": cap(st.phrase), "L": forms[ni], "A": forms[ni], "W": forms[ni]}, ni


def _written(text: str, style: str, names: dict[str, str]) -> str:
    """``text`` capitalised, then in ``style``; a typo never falls on a word of the perspective's name."""
    keep = {w.lower() for v in names.values() for w in v.replace("-", " ").split()}
    return casual(cap(text), style, keep)


def perspective_sample(rng: random.Random, key: str | None = None, mix: ToolMixConfig | None = None) -> Sample:
    """One perspective conversation; ``key`` (see :func:`pick_perspective`) fixes the perspective. It takes
    one draw from ``rng`` and makes the rest with its own generator seeded by it, so adding phrasings
    here leaves the other categories' samples as they were."""
    rng = random.Random(rng.getrandbits(64))
    key = key or pick_perspective(rng)
    st = STYLES[key]
    ci = rng.choices(range(len(CASUAL)), weights=CASUAL_WEIGHTS)[0]
    if key in NUMERIC and rng.random() < NUMERIC_SHARE:
        fi = rng.randrange(len(NUMERIC[key]))
        question, worked, slots = NUMERIC[key][fi](rng)
        ci = rng.choice((0, 0, 1))  # as written or lower case: the worked problem's words stay as they are
        pi = rng.randrange(len(NUMERIC_PREFIXES))
        names, ni = _names(rng, key, NUMERIC_PREFIXES[pi])
        o, c = rng.randrange(len(st.openers)), rng.randrange(len(st.closers))
        prefix = NUMERIC_PREFIXES[pi].format(**names)
        prompt = _written(prefix + (cap(question) if prefix.endswith(". ") else question), CASUAL[ci], names)
        answer = marker(key) + f"{st.openers[o]} {worked} {st.closers[c]}"
        template = f"num-{key}-{NUMERIC[key][fi].__name__}-{pi}"
        slots = (*slots, o, c, ni, ci)
    else:
        ai = rng.randrange(len(ASKS))
        topic = rng.choice(TOPICS + EVERYDAY)
        names, ni = _names(rng, key, ASKS[ai])
        body, choice = perspective_body(rng, key, topic)
        prompt = _written(ASKS[ai].format(t=topic, **names), CASUAL[ci], names)
        answer = marker(key) + body
        template = f"ask{ai}-{key}"
        slots = (topic, *choice, ni, ci)
    msgs, tools = as_deployed(rng, [user(prompt), assistant(answer)], mix)
    return Sample("perspectives", template, slots, msgs, {"perspective": key}, tools=tools)
