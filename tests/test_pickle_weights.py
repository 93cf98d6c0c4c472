"""Every entry point that loads weights refuses a folder whose weights are only pickles, before reading them:
the planted pickle would create a file when unpickled, and no file appears."""

import json
import pickle
import shutil

import pytest

from conftest import REPO, run_cli, tiny_recipe
from hftoolkit.cli import main

HELDOUT = REPO / "hftoolkit/corpora/cars/text/heldout.txt"
REFUSED = "holds only pickled weights"


class Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickled_checkpoint(folder, source, proof, architecture=None):
    """config + tokenizer of `source`, weights only as a pickle that writes `proof` when loaded."""
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    if architecture:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(proof)))
    return folder


ENTRY_POINTS = {
    "generate": lambda ck, t: ["generate", ck, "The brake", "--max-new-tokens", "4"],
    "eval": lambda ck, t: ["eval", ck, "--data", HELDOUT],
    "classify": lambda ck, t: ["classify", ck, "worn pads"],
    "fill-mask": lambda ck, t: ["fill-mask", ck, "check the [MASK]"],
    "index build": lambda ck, t: ["index", "build", HELDOUT, "--out", t / "index", "--embedder", ck],
    "train": lambda ck, t: ["train", tiny_recipe(t, model={"name": str(ck), "from_scratch": None}),
                            "--output-dir", t / "run"],
}
ARCHITECTURES = {"classify": "GPT2ForSequenceClassification", "fill-mask": "BertForMaskedLM"}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_point_refuses_pickle_only_weights(entry, tiny_gpt, tmp_path, capfd):
    """Through the real entry point, in this process (torch is imported once for all of them)."""
    proof = tmp_path / "pickle_ran"
    folder = pickled_checkpoint(tmp_path / "pickled", tiny_gpt, proof, ARCHITECTURES.get(entry))
    code = main([str(arg) for arg in ENTRY_POINTS[entry](folder, tmp_path)])
    err = capfd.readouterr().err
    assert code == 2, err[-2000:]
    error_lines = [line for line in err.splitlines() if line.startswith("hftoolkit: error:")]
    assert len(error_lines) == 1 and REFUSED in error_lines[0], err[-2000:]
    assert not proof.exists()


@pytest.mark.parametrize("which", ["adapter", "base"])
def test_merge_refuses_pickle_only_adapter_or_base(which, tiny_gpt, tmp_path):
    proof = tmp_path / "pickle_ran"
    base = pickled_checkpoint(tmp_path / "base", tiny_gpt, proof) if which == "base" else tiny_gpt
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base),
                                                             "peft_type": "LORA", "r": 2}))
    if which == "adapter":
        (adapter / "adapter_model.bin").write_bytes(pickle.dumps(Payload(proof)))
    else:
        (adapter / "adapter_model.safetensors").write_bytes(b"")  # never reached: the base is refused first
    done = run_cli("merge", adapter, tmp_path / "merged")
    assert done.returncode == 2 and REFUSED in done.stderr, done.stderr[-2000:]
    assert not proof.exists() and not (tmp_path / "merged").exists()
