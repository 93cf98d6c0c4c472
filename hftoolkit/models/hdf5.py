"""`hftoolkit convert CHECKPOINT OUT.h5` and back: a checkpoint folder as one HDF5 file, for HDF5-based tools.

Layout: `weights/<safetensors file>/<tensor name>` holds every tensor by name with
its shape; the `dtype` attribute names the torch dtype. bfloat16 has no HDF5
type, so it is stored as its raw 16 bits (uint16) and restored bit for bit.
`files/<name>` holds each top-level file of the folder (config, tokenizer,
generation config, chat template, card, ...) as bytes. Safetensors stays the
format hftoolkit trains, loads and publishes; this is for exchange only.
"""

from __future__ import annotations

import json
from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.safe_write import write_new_file, write_new_folder

FORMAT = "hftoolkit-checkpoint"
RAW_BITS = {"bfloat16": "int16"}  # dtypes numpy lacks, stored as same-width integers


def checkpoint_to_hdf5(folder: str, out: str) -> str:
    import h5py
    import numpy as np
    import torch
    from safetensors import safe_open

    source = Path(folder)
    weights = sorted(source.glob("*.safetensors"))
    if not source.is_dir() or not (source / "config.json").is_file() or not weights:
        raise UserError(f"convert: '{folder}' is not a checkpoint folder (config.json and *.safetensors)")
    def write(staging: Path) -> None:
        with h5py.File(staging, "w") as h5:
            h5.attrs["format"] = FORMAT
            for file in weights:
                group = h5.create_group(f"weights/{file.name}")
                with safe_open(str(file), framework="pt") as tensors:
                    group.attrs["metadata"] = json.dumps(tensors.metadata() or {})
                    for name in tensors.keys():
                        tensor = tensors.get_tensor(name)
                        dtype = str(tensor.dtype).removeprefix("torch.")
                        if dtype in RAW_BITS:
                            tensor = tensor.view(getattr(torch, RAW_BITS[dtype]))
                        dataset = group.create_dataset(name, data=tensor.numpy())
                        dataset.attrs["dtype"] = dtype
            for file in sorted(source.iterdir()):
                if file.is_file() and file.suffix != ".safetensors":
                    h5.create_dataset(f"files/{file.name}", data=np.frombuffer(file.read_bytes(), dtype=np.uint8))

    target = write_new_file(out, write, "convert")
    return str(target)


def hdf5_to_checkpoint(path: str, dest: str) -> str:
    import h5py

    source = Path(path)
    if not source.is_file():
        raise UserError(f"convert: '{path}' does not exist")
    try:
        h5 = h5py.File(source, "r")
    except OSError:
        raise UserError(f"convert: '{path}' is not an HDF5 file") from None
    with h5:
        if h5.attrs.get("format") != FORMAT or "weights" not in h5:
            raise UserError(f"convert: '{path}' was not written by `hftoolkit convert CHECKPOINT OUT.h5`")
        write_new_folder(dest, lambda staging: _write_folder(h5, staging))
    return dest


def _write_folder(h5, staging: Path) -> None:
    import torch
    from safetensors.torch import save_file

    for file_name, group in h5["weights"].items():
        tensors = {}
        for name, dataset in group.items():
            dtype = dataset.attrs["dtype"]
            tensor = torch.from_numpy(dataset[()])
            tensors[name] = tensor.view(getattr(torch, dtype)) if dtype in RAW_BITS else tensor
        save_file(tensors, str(staging / file_name), metadata=json.loads(group.attrs["metadata"]) or None)
    for name, dataset in h5.get("files", {}).items():
        (staging / name).write_bytes(dataset[()].tobytes())
