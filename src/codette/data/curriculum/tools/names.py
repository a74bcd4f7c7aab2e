"""The words tool requests are made of: file, folder and table names, lines of text, cities, searches.

File and folder names come from a large space (about a million stems per extension), so a name in a
held-out request is almost never one seen in training: copying it from the request is the only way
to get it right. FILES/FOLDERS are kept for the everyday names people use most.
"""

from __future__ import annotations

import random

from codette.data.curriculum.common import NAMES

FILES = ["notes.txt", "todo.md", "report.txt", "plan.md", "ideas.txt", "log.txt", "readme.md", "draft.txt",
         "shopping.txt", "meeting.md", "journal.txt", "tasks.txt", "recipes.md", "travel.txt"]
FOLDERS = ["docs", "data", "archive", "photos", "drafts"]
STEM_WORDS = ["budget", "garden", "invoice", "lecture", "recipe", "trip", "project", "client", "summer", "winter",
              "notes", "draft", "review", "sprint", "minutes", "letter", "essay", "chapter", "thesis", "lab",
              "grocery", "packing", "reading", "workout", "menu", "guest", "party", "wedding", "tax", "rent",
              "car", "bike", "house", "kitchen", "school", "course", "exam", "story", "poem", "song",
              "config", "server", "backup", "release", "bug", "feature", "design", "sketch", "survey", "interview",
              "team", "board", "sales", "quarter", "annual", "weekly", "daily", "monthly", "old", "new",
              "final", "v2", "copy", "misc", "personal", "work", "home", "family", "pets", "plants"]
SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vo", "qu", "zel", "bri", "dan", "fo", "gu", "hal", "ji", "nor", "pe",
             "sa", "tor", "ul", "wen", "xi", "yor", "mar", "lin", "ost", "ber"]
TEXT_EXTS = [".txt", ".md"]


def stem(rng: random.Random) -> str:
    """A file or folder stem: one to three words or made-up words, joined, maybe with a number."""
    parts = []
    for _ in range(rng.choice([1, 1, 2, 2, 2, 3])):
        if rng.random() < 0.25:
            parts.append("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))))
        else:
            parts.append(rng.choice(STEM_WORDS))
    name = rng.choice(["_", "-", "_", ""]).join(parts)
    r = rng.random()
    if r < 0.25:
        name += rng.choice(["_", "-", ""]) + str(rng.randint(1, 99))
    elif r < 0.35:
        name += "_" + str(rng.randint(2015, 2030))
    return name


def file_name(rng: random.Random, exts: list[str] | None = None) -> str:
    """A text file name: an everyday one (a quarter of the time) or a composed one."""
    if rng.random() < 0.25 and exts is None:
        return rng.choice(FILES)
    return stem(rng) + rng.choice(exts or TEXT_EXTS)


def file_names(rng: random.Random, n: int, exclude: str = "") -> list[str]:
    """``n`` distinct file names, none equal to ``exclude``."""
    names: list[str] = []
    while len(names) < n:
        f = file_name(rng)
        if f != exclude and f not in names:
            names.append(f)
    return names


def folder_name(rng: random.Random) -> str:
    return rng.choice(FOLDERS) if rng.random() < 0.25 else stem(rng)


LINES = ["buy more coffee", "call the lab at noon", "finish the draft", "water the plants", "review the budget",
         "test the new sensor", "write the summary", "book the train", "email the landlord", "fix the bike brake",
         "pick up the parcel", "renew the passport", "plan the team lunch", "back up the laptop",
         "read chapter four", "pay the electricity bill", "clean the kitchen", "order new batteries",
         "send the invoice", "update the website", "prepare the slides", "walk the dog", "call grandma",
         "check the tyre pressure", "return the library books", "sort the photos", "practice the piano",
         "buy bread and eggs", "schedule the dentist", "measure the window"]
TABLES = [("sales.csv", "month", ["revenue", "units"]), ("weather.csv", "day", ["temperature", "rainfall"]),
          ("scores.csv", "student", ["score", "age"]), ("runs.csv", "date", ["distance", "minutes"]),
          ("prices.csv", "item", ["price", "stock"]), ("heights.csv", "name", ["height", "weight"]),
          ("traffic.csv", "hour", ["cars", "bikes"]), ("energy.csv", "week", ["kwh", "cost"])]
LABELS = {"month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug"],
          "day": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "student": NAMES[:8], "date": [
              "may-1", "may-2", "may-3", "may-4", "may-5", "may-6", "may-7"], "item": [
              "pen", "cup", "lamp", "book", "chair", "plate", "clock"], "name": NAMES[8:16],
          "hour": ["7h", "8h", "9h", "10h", "11h", "12h", "13h"], "week": ["w1", "w2", "w3", "w4", "w5", "w6", "w7"]}
CITIES = ["Paris", "Lagos", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Seoul", "Perth", "Dublin",
          "Nairobi", "Madrid", "Hanoi", "Denver", "Toronto", "Manila", "Vienna", "Accra", "Santiago", "Austin",
          "Kyoto", "Porto", "Bergen", "Tunis", "Lyon", "Osaka", "Zurich", "Rabat", "Havana"]
SEARCHES = ["rotary position embeddings", "the GGUF file format", "llama.cpp", "running models with Ollama",
            "the history of the telescope", "what a transformer model is", "how bees communicate",
            "why the sky is blue", "how tides work", "what entropy means", "how vaccines train the immune system",
            "how solar panels work", "Newton's laws of motion", "Leonardo da Vinci", "byte-pair encoding",
            "SQLite full-text search", "the Python programming language", "photosynthesis", "the speed of light",
            "the period of a pendulum",
            # Other wordings of the same recorded pages (each still finds its page).
            "RoPE", "rotary embeddings in transformers", "GGUF", "the GGUF format for llama.cpp models",
            "running a model with llama.cpp", "how to use Ollama", "who invented the telescope", "telescope history",
            "the transformer architecture", "attention in transformers", "the waggle dance", "bee communication",
            "Rayleigh scattering", "what causes tides", "ocean tides and the moon", "entropy in physics",
            "how vaccines work", "photovoltaic cells", "solar power", "Newton's first law", "Leonardo's notebooks",
            "da Vinci's inventions", "byte pair encoding for tokenizers", "full-text search in SQLite",
            "how plants make sugar", "how fast light travels", "the speed of light in a vacuum", "how a pendulum swings"]
NO_RESULT_SEARCHES = ["xylophone repair shops", "best pizza in town", "football results", "knitting patterns",
                      "cheap flights to Rome", "concert tickets"]
BLOCKED_SITES = ["example.com", "news.example.org", "api.weather.com", "www.wikipedia.org", "github.com"]
WORDS = ["river", "planet", "garden", "codette", "python", "rocket", "violin", "lantern", "harbor", "meadow"]
IMAGE_FILES = ["photo.png", "logo.png", "chart.png", "scan.bmp", "icon.gif", "banner.png", "sketch.bmp"]
SIZES = [(16, 16), (32, 24), (64, 48), (48, 64), (100, 50), (120, 80), (80, 80), (200, 100)]


def text_file(rng: random.Random, k: int | None = None) -> str:
    """One to three lines (or ``k``) of a to-do note."""
    return "".join(line + "\n" for line in rng.sample(LINES, k or rng.randint(1, 3)))


def other_files(rng: random.Random, exclude: str, n: int) -> dict[str, str]:
    """``n`` one-line files beside the one a request is about, so the workspace is not trivially empty."""
    names = file_names(rng, n, exclude)
    return {f: text_file(rng, 1) for f in names}
