"""Mixed reasoning: one question answered through two to four perspectives, then a synthesis.

Each part starts with its own ``<perspective> <key>`` marker and one reasoning step in that
perspective's style; the synthesis names what each perspective contributed. The user either names
the perspectives or leaves the choice to Codette; the record's ``perspectives`` lists those used.
"""

from __future__ import annotations

import random

from codette.data.curriculum.common import TOPICS, Sample, assistant, cap, join_words, user, with_system
from codette.data.curriculum.perspectives import marker
from codette.data.curriculum.styles import STYLES

OPEN_ASKS = ["Think about {t} from several perspectives.", "Give me a multi-perspective analysis of {t}.",
             "Combine your perspectives on {t}.", "Look at {t} from different angles.",
             "What do your perspectives say about {t}?", "Analyse {t} from more than one perspective."]
NAMED_ASKS = ["Use the {L} perspectives on {t}.", "Compare the {L} views of {t}.",
              "What do the {L} perspectives say about {t}?", "Combine {L} to think about {t}."]
SYNTHESES = [
    "Synthesis: {T} is best understood by combining {F}.",
    "Synthesis: each view covers a different side of {t}, namely {F}; together they give a fuller answer than any "
    "one alone.",
    "Synthesis: where these views agree we can be confident about {t}, and where they differ we have found the "
    "open questions. Together they cover {F}.",
]


def mixed_sample(rng: random.Random) -> Sample:
    k = rng.choice([2, 2, 3, 3, 4])
    chosen = rng.sample(list(STYLES), k)
    topic = rng.choice(TOPICS)
    named = rng.random() < 0.5
    if named:
        ai = rng.randrange(len(NAMED_ASKS))
        prompt = NAMED_ASKS[ai].format(t=topic, L=join_words([STYLES[p].phrase for p in chosen]))
    else:
        ai = rng.randrange(len(OPEN_ASKS))
        prompt = OPEN_ASKS[ai].format(t=topic)
    moves = tuple(rng.randrange(len(STYLES[p].moves)) for p in chosen)
    parts = [marker(p) + STYLES[p].moves[m].format(t=topic, T=cap(topic)) for p, m in zip(chosen, moves)]
    si = rng.randrange(len(SYNTHESES))
    focus = join_words([f"{STYLES[p].focus} ({STYLES[p].phrase})" for p in chosen])
    synthesis = SYNTHESES[si].format(t=topic, T=cap(topic), F=focus)
    msgs = with_system(rng, [user(prompt), assistant("\n".join(parts) + "\n" + synthesis)])
    return Sample("mixed", f"mix-{int(named)}-{ai}-{si}", (tuple(chosen), topic, moves), msgs,
                  {"perspectives": chosen})
