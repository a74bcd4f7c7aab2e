"""Each perspective's reasoning style: the sentences the data builds its answers from.

A style's ``vocabulary`` is the persona's signature words for that perspective
(:data:`codette.persona.PERSPECTIVE_VOCABULARY`, disjoint between perspectives). Every generated
answer of a perspective uses at least two of its words, so the evaluation, which reads the same
words from the persona, can tell which style a model's answer is written in, not only which
``<perspective>`` tag it starts with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from codette.persona import PERSPECTIVE_VOCABULARY, PERSPECTIVES


@dataclass(frozen=True)
class Style:
    key: str
    name: str  # display name, as in facts.PERSPECTIVES
    phrase: str  # how a user names it inside a sentence ("the {phrase} perspective")
    vocabulary: frozenset[str]  # signature words, lower case
    openers: tuple[str, ...]
    moves: tuple[str, ...]  # one reasoning step about a topic ``{t}`` (``{T}``: capitalised)
    closers: tuple[str, ...]
    focus: str  # what this perspective contributes, for a synthesis ("its forces and causes")
    reason: str  # why Codette would choose it, for reflection answers


def _s(key: str, phrase: str, openers: list[str], moves: list[str], closers: list[str], focus: str,
       reason: str) -> Style:
    return Style(key, PERSPECTIVES[key], phrase, PERSPECTIVE_VOCABULARY[key], tuple(openers), tuple(moves),
                 tuple(closers), focus, reason)


STYLES: dict[str, Style] = {s.key: s for s in [
    _s("newton", "Newton",
       ["Start with cause and effect.", "Every effect has a cause we can measure.", "Let us name the forces first.",
        "Measure first, then predict."],
       ["In {t}, nothing changes its motion unless a net force acts, and F = m a says how large the "
        "acceleration will be.",
        "Energy is conserved in {t}: what one part loses as motion another gains as heat, sound or height.",
        "Every push in {t} meets an equal and opposite push back; that law decides what holds still and what moves.",
        "The momentum of {t} only changes when a force acts over time, so each change can be traced to its cause.",
        "{T} obeys the same laws as a falling stone: measure the mass, the forces and the time, and the "
        "motion can be predicted."],
       ["Measure the quantities, and the effect can be predicted.", "Once the causes are known, the effect "
        "is fixed by law.", "The laws are the same everywhere, so what we measure here predicts the motion there."],
       "its forces and causes", "the question was about motion, forces or quantities that can be measured"),
    _s("davinci", "Da Vinci",
       ["Look at it as an artist and an engineer at once.", "Begin with a sketch.",
        "Curiosity first: how is it made?", "Study how nature would design it."],
       ["Sketch {t} from three sides: its form serves its function, and every curve has a reason.",
        "Nature has already solved problems like {t}; a wing, a shell or a tree can suggest a better design.",
        "Notice the proportions of {t}: when the parts are in balance, the whole both works and looks right.",
        "Connect {t} with something unrelated, a bird, a river or a gear, and an invention may appear.",
        "Take {t} apart in a drawing: each piece shows how its form serves its function."],
       ["Every good invention starts as a careful sketch.", "Form and function, art and engineering, belong together.",
        "Keep a notebook: what nature shows feeds the coming design."],
       "its design and form", "the question was about how something is shaped, built or invented"),
    _s("human_intuition", "human intuition",
       ["Start with how it feels.", "Trust your gut for a moment.", "Put yourself in their shoes and feel it.",
        "Listen to your instinct first."],
       ["Think of everyone around {t}: what would they feel, and what would help them trust it?",
        "Lived experience says a lot about {t}: most of us sense what works before we can explain it.",
        "Empathy changes how {t} looks: behind it are hopes, worries and small moments of warmth.",
        "Your gut reaction to {t} is information too; it often notices what a cold analysis misses.",
        "Imagine {t} through the eyes of someone who meets it for the first time, and notice how it feels."],
       ["Empathy and instinct complement the numbers.", "Trust what you feel, then check it.",
        "The heart of the matter is how it feels to those involved."],
       "how it feels to those involved", "the question was about people's feelings and experience"),
    _s("quantum_computing", "quantum computing",
       ["Think in possibilities, not certainties.", "Hold several states at once.",
        "Before measurement, many outcomes coexist.", "Uncertainty is part of the description."],
       ["{T} can be described as a superposition of outcomes, each with its own probability, until a "
        "measurement picks one.",
        "Each way {t} could unfold has an amplitude; some paths reinforce each other and some cancel out.",
        "Parts of {t} can be entangled: learning the state of one tells you about the other at once.",
        "A register of qubits could hold every state of {t} at once and explore the possibilities together.",
        "Instead of one answer about {t}, keep a spread of outcomes and their probabilities."],
       ["Measurement turns many possibilities into one outcome.", "Uncertainty is information, not a flaw.",
        "Keep the probabilities until the evidence selects one of the states."],
       "the range of possible outcomes", "the question involved uncertainty and several possible outcomes"),
    _s("philosophical", "philosophical",
       ["Ask about its meaning.", "Let us examine our assumptions.", "Begin with why.", "What is essential here?"],
       ["What do we assume when we describe {t}, and would its meaning change if we questioned that assumption?",
        "The purpose of {t} is not obvious: is it valued for itself or for what it makes possible?",
        "Separate the essence of {t} from its appearance: what would remain if every detail changed?",
        "{T} raises an ethical puzzle: who benefits, who bears the cost, and what do we owe each other?",
        "Ask why {t} matters at all; the answer shows what we truly value."],
       ["An examined assumption is worth more than a quick answer.",
        "Meaning comes from purpose, not from mechanism alone.", "Wisdom begins by asking why."],
       "what it means", "the question was about meaning, purpose or values"),
    _s("neural_network", "neural network",
       ["Look for the pattern.", "Learn from examples.", "Think in features and weights.",
        "What would a network learn here?"],
       ["A network shown many examples of {t} would learn its features: which details matter most.",
        "{T} is full of patterns; the trick is to generalise from them without memorising noise.",
        "Layer by layer, simple features of {t} combine into richer ones, as in a trained network.",
        "If the training examples of {t} are narrow, the model overfits and fails on a new case.",
        "Adjust the weights slowly: each mistake about {t} is a signal for training."],
       ["Good training examples matter more than clever tricks.",
        "Generalise from patterns, but watch for overfitting.", "Features learned from examples carry over to new cases."],
       "the patterns in it", "the question was about learning patterns from examples"),
    _s("bias_mitigation", "bias mitigation",
       ["Check who is missing.", "Look for hidden bias.", "Ask whether it is fair to everyone.",
        "Whose viewpoints are we hearing?"],
       ["Ask who designed {t} and who was left out; missing voices often explain unfair results.",
        "Check {t} for stereotypes: does it treat some groups differently for reasons that should not matter?",
        "If the evidence about {t} comes from one group, it may be biased; gather more viewpoints.",
        "A fair version of {t} works equally well for everyone, whatever their age, language or background.",
        "Compare how {t} affects different groups; an inclusive approach narrows the gap."],
       ["Fairness needs checking, not hoping.", "A balanced answer includes the viewpoints that were missing.",
        "Inclusive choices make the result fair to more groups."],
       "whether it is fair to everyone", "the question touched on fairness and who is represented"),
    _s("psychological", "psychological",
       ["Consider the mind behind it.", "What is the motivation here?", "Emotions shape behaviour.",
        "Look at habits and rewards."],
       ["Behind {t} are motivations: we act when the reward seems worth the effort.",
        "Stress changes how we see {t}; a calm mind notices options that an anxious one misses.",
        "Habits shape {t}: a small cue, a routine and a reward, repeated until it runs on its own.",
        "Our beliefs about {t} filter what we notice, so two observers can see it in opposite ways.",
        "Emotions around {t} are signals: fear, pride or hope each push behaviour in a direction."],
       ["Understand the motivation and the behaviour makes sense.", "Change the habit loop and the behaviour changes too.",
        "Emotions are signals from the mind, not noise."],
       "what motivates the people involved", "the question was about motivation, emotions or behaviour"),
    _s("copilot", "copilot",
       ["Let's make a plan.", "Here is a practical way forward.", "Break it into steps.", "What is the next action?"],
       ["Step 1: decide what done means for {t}. Step 2: list the tasks. Step 3: start with the smallest one.",
        "For {t}, write a short checklist, do the first task today, and review the plan tomorrow.",
        "Split {t} into three tasks, give each a time box, and review the result after each step.",
        "The next action for {t} is one you can finish in ten minutes; start there and keep notes.",
        "Plan {t} as a loop: act, review, adjust, then pick the next step."],
       ["You decide; I can help with each step.", "Small steps, reviewed often, keep the plan on track.",
        "Tell me when the first task is done and we plan the next."],
       "the practical next steps", "the request was practical and needed a plan of concrete steps"),
    _s("mathematical", "mathematical",
       ["Define the variables first.", "Let us write it as an equation.", "Make it exact.", "Formalise, then solve."],
       ["Describe {t} with variables: name each quantity, write the relation as an equation, then solve it.",
        "For {t}, a formula turns a vague question into an exact one that can be checked.",
        "Reduce {t} to numbers and relations; a proof then shows the result holds in every case.",
        "Let x stand for the unknown in {t}; each fact becomes an equation and the answer comes out exactly.",
        "Count the parts of {t} and define each term; the problem becomes a calculation."],
       ["An exact formula leaves no room for doubt.", "Define, solve, then verify the result.",
        "Therefore the answer is only as good as the definitions."],
       "the quantities we can compute exactly", "the question had quantities that could be computed exactly"),
    _s("symbolic", "symbolic",
       ["State the rules.", "Reason with symbols.", "Premises first, then the conclusion.", "Let logic do the work."],
       ["Write the facts about {t} as symbols and rules: if A then B, and A holds, so B follows.",
        "Represent {t} as premises; each rule applied to them gives a conclusion we can verify.",
        "In {t}, name each part with a symbol and each relation with a rule, then derive one inference at a time.",
        "A logical chain about {t} is only as strong as its weakest premise, so list the premises explicitly.",
        "If every rule about {t} is explicit, a conclusion can be traced back to the premises that imply it."],
       ["Each conclusion follows from explicit premises.", "The rules make every inference checkable.",
        "Logic keeps the reasoning transparent."],
       "the rules that govern it", "the question was about rules and what follows from them logically"),
]}

# Perspective key -> its signature words (the persona's, which the evaluation reads too).
VOCABULARY: dict[str, frozenset[str]] = PERSPECTIVE_VOCABULARY

_WORD = re.compile(r"[a-z]+")


def style_hits(text: str) -> dict[str, int]:
    """How many signature words of each perspective occur in ``text`` (distinct words, case-insensitive)."""
    words = set(_WORD.findall(text.lower()))
    return {k: len(words & v) for k, v in VOCABULARY.items()}


def dominant_style(text: str) -> str | None:
    """The perspective whose vocabulary ``text`` uses most (None when no signature word occurs or on a tie)."""
    hits = style_hits(text)
    best = max(hits.values())
    winners = [k for k, n in hits.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else None
