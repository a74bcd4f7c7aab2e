"""Image requests: colour, size and a description of a generated image, and a file that is not one."""

from __future__ import annotations

import random
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.tools.base import Scenario, pick
from codette.data.curriculum.tools.names import IMAGE_FILES, SIZES, stem
from codette.tools.image import NAMED_COLORS

# How people ask about an image ``{f}``, by what they want to know (also the copy documents' wording).
IMAGE_PROMPTS = {"colour": ["What colour is {f}?", "What is the main colour of {f}?"],
                 "describe": ["Describe the image {f}.", "Analyse {f} for me."],
                 "size": ["How big is {f}?", "What are the dimensions of {f}?"],
                 "gray": ["Is {f} a grayscale image?", "Is {f} black and white?"]}


def analyze_image(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    f = rng.choice(IMAGE_FILES) if rng.random() < 0.25 else stem(rng) + rng.choice([".png", ".png", ".bmp", ".gif"])
    fmt_name = {"png": "PNG", "bmp": "BMP", "gif": "GIF"}[f.rsplit(".", 1)[1]]
    colour = rng.choice(list(NAMED_COLORS))
    spec: dict[str, Any] = {"size": list(rng.choice(SIZES)), "fill": list(NAMED_COLORS[colour]), "format": fmt_name}
    if rng.random() < 0.3:
        other = rng.choice([c for c in NAMED_COLORS if c != colour])
        spec["band"] = {"color": list(NAMED_COLORS[other]), "fraction": rng.choice([0.1, 0.2, 0.3])}
    if fmt_name != "GIF" and rng.random() < 0.15:
        spec["mode"] = "L"
    broken = rng.random() < mix.call_error
    setup: dict[str, Any] = {"files": {f: "this is not an image\n"}} if broken else {"images": {f: spec}}
    kind = rng.choice(["colour", "describe", "size", "gray"])
    pi, prompt = pick(rng, IMAGE_PROMPTS[kind])

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"I could not analyse {f}: it is not an image file I can read. It may be a text file with an "
                    f"image name; check the file.")
        name, hx = data["dominant_name"], data["dominant_hex"]
        if kind == "colour":
            return f"The dominant colour of {f} is {name} ({hx})."
        if kind == "size":
            return f"{f} is {data['width']} x {data['height']} pixels ({data['format']})."
        if kind == "gray":
            return f"Yes, {f} is grayscale." if data["grayscale"] else f"No, {f} is in colour, mostly {name}."
        gray = ", in grayscale" if data["grayscale"] else ""
        return (f"{f} is a {data['width']} x {data['height']} {data['format']} image{gray}; its dominant colour "
                f"is {name} ({hx}).")

    return Scenario("analyze_image", f"{kind}-{int(broken)}-{pi}", prompt.format(f=f), "analyze_image", {"path": f},
                    setup, answer, ())
