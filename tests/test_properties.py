"""Property-based tests (hypothesis): the recipe loader never fails any other way than one UserError, and
packing neither loses nor duplicates a token and keeps every block within its size."""

import io
import re
from contextlib import redirect_stderr, redirect_stdout

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftoolkit.cli import main
from hftoolkit.data.pack import IGNORE_INDEX, pack_blocks, truncate_blocks
from hftoolkit.errors import UserError
from hftoolkit.recipe.load import load_recipe
from hftoolkit.recipe.validate import validate

documents = st.lists(st.lists(st.integers(min_value=0, max_value=50_000), max_size=40), max_size=30)


@given(documents, st.integers(min_value=1, max_value=64))
def test_packing_keeps_every_token_once_in_order(docs, block_size):
    blocks = pack_blocks({"input_ids": docs}, block_size, pad_id=0)
    stream = [token for doc in docs for token in doc]
    assert all(len(row) == block_size for key in blocks for row in blocks[key])
    real = [t for ids, mask in zip(blocks["input_ids"], blocks["attention_mask"]) for t, m in zip(ids, mask) if m]
    assert real == stream  # nothing lost, nothing repeated, order kept
    assert len(blocks["input_ids"]) == -(-len(stream) // block_size)  # no empty block, no extra block
    for ids, mask, labels in zip(blocks["input_ids"], blocks["attention_mask"], blocks["labels"]):
        assert labels == [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
        assert mask == sorted(mask, reverse=True)  # padding only at the end
    assert all(all(mask) for mask in blocks["attention_mask"][:-1])  # only the last block is padded


@given(documents, st.integers(min_value=1, max_value=64))
def test_position_ids_count_within_each_document_piece(docs, block_size):
    blocks = pack_blocks({"input_ids": docs}, block_size, pad_id=0)
    # expected: each non-empty document's tokens, cut at block edges, numbered from 0 per piece
    pieces = []
    offset = 0
    for doc in docs:
        for i in range(len(doc)):
            if i == 0 or (offset + i) % block_size == 0:
                pieces.append(0)
            else:
                pieces.append(pieces[-1] + 1)
        offset += len(doc)
    real = [p for positions, mask in zip(blocks["position_ids"], blocks["attention_mask"])
            for p, m in zip(positions, mask) if m]
    assert real == pieces
    for positions, mask in zip(blocks["position_ids"], blocks["attention_mask"]):
        pads = block_size - sum(mask)
        assert positions[block_size - pads:] == list(range(pads))  # padding: a segment of its own


@given(documents, st.integers(min_value=1, max_value=64))
def test_truncation_counts_exactly_what_it_cuts(docs, block_size):
    blocks = truncate_blocks({"input_ids": docs}, block_size, pad_id=0)
    assert len(blocks["input_ids"]) == len(docs)
    for doc, ids, mask, cut in zip(docs, blocks["input_ids"], blocks["attention_mask"], blocks["truncated"]):
        assert len(ids) == block_size and ids[:sum(mask)] == doc[:block_size]
        assert cut == max(0, len(doc) - block_size) and sum(mask) + cut == len(doc)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=12))
sections = st.sampled_from(["model", "data", "preprocess", "training", "output", "description", "modle"])
keys = st.sampled_from(["name", "task", "train", "format", "block_size", "epochs", "learning_rate", "batch_size",
                        "lora", "retrieval", "dir", "from_scratch", "precision", "sentences", "typo_key"])
recipes = st.dictionaries(sections, st.one_of(scalars, st.dictionaries(keys, st.one_of(
    scalars, st.dictionaries(keys, scalars, max_size=3), st.lists(scalars, max_size=3)), max_size=5)), max_size=6)


NAMES_A_FIELD = re.compile(r"^(unknown key '[\w.]+'|(description|model|data|preprocess|training|output)(\.\w+)*[: ])")


def cli(*argv) -> tuple[int, str, str]:
    """The real `hftoolkit` entry point in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_one_line_naming_a_field(code: int, out: str, err: str) -> None:
    assert code == 2 and out == "", (code, out, err)
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("hftoolkit: error: "), err
    assert NAMES_A_FIELD.match(err[len("hftoolkit: error: "):]), err


def same_value(given_value, shown) -> bool:
    """A value as written in YAML against the resolved one (numbers may become float, scalars str; an empty
    section is all defaults)."""
    if given_value is None and isinstance(shown, dict):
        return True
    if isinstance(given_value, dict):
        return isinstance(shown, dict) and all(same_value(v, shown.get(k)) for k, v in given_value.items())
    if isinstance(given_value, (int, float)) and not isinstance(given_value, bool) and isinstance(shown, (int, float)):
        return float(given_value) == float(shown)
    return given_value == shown or (isinstance(shown, str) and str(given_value) == shown)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recipes)
def test_any_yaml_recipe_loads_or_is_one_user_error(tmp_path, raw):
    """Through the command line: either `recipes show` prints the recipe with every value written in the YAML,
    or it exits 2 with one line that names the field; validation likewise names the field."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw))
    code, out, err = cli("recipes", "show", str(path))
    if code != 0:
        assert_one_line_naming_a_field(code, out, err)
        return
    shown = yaml.safe_load(out)
    for section, values in raw.items():
        assert same_value(values, shown[section]), (section, values, shown[section])
    try:
        validate(load_recipe(str(path)))
    except UserError as exc:
        assert "\n" not in str(exc) and NAMES_A_FIELD.match(str(exc)), str(exc)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_any_override_applies_or_is_one_user_error(override):
    """An override either lands on its key, with its value, or exits 2 with one line naming the field."""
    if override.startswith("-"):
        return  # an option to argparse, not an override (argparse answers with its usage line)
    code, out, err = cli("recipes", "show", "gpt_from_scratch", override)
    if code != 0:
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("hftoolkit: error: "), err
        return
    key, value = override.split("=", 1)
    node = yaml.safe_load(out)
    for part in key.strip().split("."):
        node = node[part]
    assert same_value(yaml.safe_load(value) if value.strip() else value, node) or str(node) == value.strip(), \
        (override, node)
