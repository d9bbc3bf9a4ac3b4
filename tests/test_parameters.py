"""AUTOMATIC1111 ``parameters`` text: format_parameters and parse_parameters."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import tensorpng
from tensorpng import OptionError, format_parameters, parse_parameters

# Infotexts in the shape the WebUI writes (processing.py create_infotext): prompt lines,
# "Negative prompt:" lines, one settings line; values with commas or colons JSON-quoted.
WEBUI_TEXTS = [
    "masterpiece, best quality, 1girl, (blue eyes:1.2), <lora:add_detail:0.5>\n"
    "Negative prompt: (worst quality, low quality:1.4), EasyNegative\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3253962025, Size: 512x768, "
    "Model hash: 7f96a1a9ca, Model: anythingV5, Denoising strength: 0.5, Clip skip: 2, Hires upscale: 2, "
    'Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", '
    'TI hashes: "EasyNegative: c74b4e810b03", Version: v1.6.0',
    "a photograph of an astronaut riding a horse\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 1024x1024, Model: sd_xl_base_1.0",
    "portrait of a woman,\nstudio lighting,\n85mm\n"
    "Negative prompt: blurry\ncartoon\n"
    "Steps: 30, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 5, Seed: 1, Size: 832x1216, "
    'ADetailer model: face_yolov8n.pt, ADetailer prompt: "smiling face, detailed eyes", '
    "ADetailer version: 24.1.2, Version: f0.0.17v1.8.0rc-latest-276-g29be1da7",
    "Negative prompt: text, watermark\nSteps: 50, Sampler: DDIM, CFG scale: 9, Seed: 7, Size: 768x512",
    "chat prompt with “curly quotes” and 日本語\n"
    'Steps: 25, Sampler: UniPC, CFG scale: 6, Seed: 99, Size: 640x640, Model: "model, v2"',
]


def test_reads_the_webuis_fields() -> None:
    first = parse_parameters(WEBUI_TEXTS[0])
    assert first["prompt"] == "masterpiece, best quality, 1girl, (blue eyes:1.2), <lora:add_detail:0.5>"
    assert first["negative_prompt"] == "(worst quality, low quality:1.4), EasyNegative"
    assert first["Steps"] == "28" and first["Sampler"] == "DPM++ 2M Karras" and first["CFG scale"] == "7"
    assert first["Seed"] == "3253962025" and first["Size"] == "512x768" and first["Model"] == "anythingV5"
    assert first["Lora hashes"] == "add_detail: 7c6bad76eb54"  # unquoted
    assert list(first)[2:7] == ["Steps", "Sampler", "CFG scale", "Seed", "Size"]
    third = parse_parameters(WEBUI_TEXTS[2])
    assert third["prompt"] == "portrait of a woman,\nstudio lighting,\n85mm"
    assert third["negative_prompt"] == "blurry\ncartoon"
    assert third["ADetailer prompt"] == "smiling face, detailed eyes"
    fourth = parse_parameters(WEBUI_TEXTS[3])
    assert fourth["prompt"] == "" and fourth["negative_prompt"] == "text, watermark"
    assert parse_parameters(WEBUI_TEXTS[4])["Model"] == "model, v2"


@pytest.mark.parametrize("text", WEBUI_TEXTS)
def test_formatting_what_was_read_gives_the_text_back(text: str) -> None:
    assert format_parameters(parse_parameters(text)) == text


def test_text_without_settings_is_all_prompt() -> None:
    assert parse_parameters("just a prompt, style: anime") == {
        "prompt": "just a prompt, style: anime",
        "negative_prompt": "",
    }


def test_snake_case_names_sizes_and_numbers() -> None:
    text = format_parameters(
        {
            "prompt": "a cat",
            "negative_prompt": "a dog",
            "steps": 20,
            "sampler": "Euler a",
            "cfg_scale": 7.0,
            "seed": 1234,
            "size": (512, 768),
            "model": "v1-5-pruned",
            "Hires upscale": 1.5,
            "ENSD": None,  # left out, as the WebUI does
        }
    )
    assert text == (
        "a cat\nNegative prompt: a dog\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x768, Model: v1-5-pruned, "
        "Hires upscale: 1.5"
    )


# Text the WebUI format can carry: no line starts with "Negative prompt:" in the prompt, and
# prompts have no whitespace at either end (the WebUI strips the whole text).
_words = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
_line = _words.map(str.strip).filter(lambda s: bool(s) and not s.startswith("Negative prompt:"))
_prompt = st.lists(_line, max_size=3).map("\n".join)
_value = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_key = st.from_regex(r"[A-Za-z][A-Za-z0-9 \-/]{1,12}[A-Za-z0-9]", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(_prompt, _prompt, st.dictionaries(_key, _value, min_size=3, max_size=6))
def test_parse_inverts_format(prompt: str, negative: str, extra: dict[str, str]) -> None:
    extra = {key: value for key, value in extra.items() if key not in ("prompt", "negative_prompt")}
    if len(extra) < 3:
        return
    given_parameters = {"prompt": prompt, "negative_prompt": negative, **extra}
    parsed = parse_parameters(format_parameters(given_parameters))
    if not prompt and not negative:
        assert parsed == {"prompt": "", "negative_prompt": "", **extra}
    else:
        assert parsed == given_parameters


@pytest.mark.parametrize(
    "parameters",
    [
        {"prompt": "x", "steps": 1, "seed": 2},  # two settings: the WebUI would read them as prompt
        {"prompt": "x", "steps": 1, "seed": 2, "bad:key": 3},
        {"prompt": "x", "steps": 1, "Steps": 2, "seed": 3},
        {"prompt": "x", "steps": 1, "seed": 2, "size": (1, 2, 3)},
        {"prompt": "x", "steps": 1, "seed": 2, "k": 3},  # keys have 2+ characters
    ],
)
def test_bad_parameters(parameters: dict[str, object]) -> None:
    with pytest.raises(OptionError):
        format_parameters(parameters)


def test_pillow_reads_back_what_save_image_wrote() -> None:
    text = WEBUI_TEXTS[0]
    data = io.BytesIO()
    tensorpng.save_image(np.zeros((3, 8, 8), np.float32), data, metadata={"parameters": text})
    with Image.open(data) as image:
        assert image.text["parameters"] == text
        assert parse_parameters(image.text["parameters"]) == parse_parameters(text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='ab :,"\\-/\t1x\n', max_size=24))
def test_the_settings_scan_is_the_webuis_regex(line: str) -> None:
    from tensorpng.parameters import _SETTING, _settings

    assert _settings(line) == _SETTING.findall(line)


@pytest.mark.timeout(20)  # a hang guard: the regex's findall took about an hour on 1 MiB
def test_a_long_line_without_colons_is_read_in_linear_time() -> None:
    text = "a" * (1 << 20)  # the largest text value tensorpng reads
    assert tensorpng.parse_parameters(text)["prompt"] == text
    data = tensorpng.encode(np.zeros((2, 2), np.uint8), metadata={"parameters": ("word " * 200_000).strip()})
    assert tensorpng.parse_parameters(tensorpng.read_text(data)["parameters"])["negative_prompt"] == ""


@pytest.mark.parametrize("value", [None, 123, b"Steps: 20"])
def test_parse_parameters_takes_text_only(value: object) -> None:
    with pytest.raises(tensorpng.OptionError, match="reads text"):
        tensorpng.parse_parameters(value)  # type: ignore[arg-type]
