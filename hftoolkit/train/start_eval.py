"""The evaluation before the first step, reused by the next run that would measure the same thing.

`eval_on_start` measures the base model on the validation blocks: the number the run is judged against. Runs
that differ only in what training changes (learning rate, steps, schedule, LoRA or not) measure it again, at
the cost of a whole evaluation before the first step (4.5-6 s of a 3-minute `cars_lm` run in fp32 on an AVX2
CPU). Its result is kept under a key of everything that decides it: the model folder's files (names, sizes,
modification times), the validation blocks' tokens, the precision, the eval batch, the number of processes
and the library versions. Any change measures it again. Not for models built from scratch (new weights per
run), classification heads (new per run) or answer accuracy (it generates with settings of its own).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hftoolkit.data.cache import cache_key
from hftoolkit.models.load import resolve_model_path
from hftoolkit.paths import cache_dir
from hftoolkit.train.distributed import world_size

SKIPPED = ("_runtime", "_samples_per_second", "_steps_per_second")  # timings of the run that measured it


def model_files(folder: Path) -> list:
    """(name, size, mtime_ns) of the files a model folder holds: a re-saved or replaced weight changes them."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def tokens_digest(dataset) -> str:
    """A hash of a datasets.Dataset's columns, row by row in order (list columns flattened with their lengths)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    digest = hashlib.sha256()
    table = dataset.with_format("arrow")[:]  # in the dataset's order, past any indices mapping
    for name in sorted(table.column_names):
        column = table.column(name).combine_chunks()
        digest.update(name.encode())
        while pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            digest.update(pc.list_value_length(column).to_numpy(zero_copy_only=False).tobytes())
            column = pc.list_flatten(column)
        digest.update(column.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def start_eval_key(recipe, model_folder: str, validation, precision: str, world: int) -> str | None:
    """The cache key of this run's evaluation on start, or None where it is not measured or not reusable."""
    from importlib.metadata import version

    training = recipe.training
    if not (training.eval_on_start and training.reuse_start_eval) or training.answer_accuracy:
        return None
    if recipe.model.from_scratch or recipe.model.task != "causal_lm" or not Path(model_folder).is_dir():
        return None
    if not hasattr(validation, "with_format"):
        return None
    return cache_key({"model": model_files(Path(model_folder)), "validation": tokens_digest(validation),
                      "precision": precision, "eval_batch_size": training.eval_batch_size, "world": world,
                      "lora": training.lora.enabled, "format": recipe.data.format,
                      "versions": [version(name) for name in ("hftoolkit", "torch", "transformers")]})


def cached_start_eval(key: str | None) -> dict | None:
    if key is None:
        return None
    path = cache_dir("start_eval") / f"{key}.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and "eval_loss" in metrics else None


def store_start_eval(key: str | None, log_history: list[dict]) -> None:
    """Keep the step-0 evaluation this run measured (written whole, then renamed into place)."""
    first = next((h for h in log_history if "eval_loss" in h), None)
    if key is None or first is None or first.get("step") != 0 or first.get("start_eval_reused"):
        return
    metrics = {k: v for k, v in first.items() if k.startswith("eval_") and not k.endswith(SKIPPED)}
    path = cache_dir("start_eval") / f"{key}.json"
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # runs sharing the cache never share a staging file
    staged.write_text(json.dumps(metrics, sort_keys=True))
    staged.replace(path)


def logged_at_start(trainer, metrics: dict):
    """A callback that logs the reused evaluation at step 0, where the Trainer would have logged its own: the
    log history, TensorBoard and the run's summary see it as they see a measured one."""
    from transformers import TrainerCallback

    class StartEvalReused(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                trainer.log({**metrics, "start_eval_reused": 1})

    return StartEvalReused()


def reuse_start_eval(recipe, trainer, validation, precision: str, log) -> str | None:
    """Before training: log a cached evaluation on start in place of measuring it again when one matches. Returns
    the key under which this run keeps the one it measures (`store_start_eval`), None when there is none to keep."""
    folder = None if recipe.model.from_scratch else resolve_model_path(recipe.model.name, lambda m: None)
    key = start_eval_key(recipe, folder or "", validation, precision, world_size())
    reused = cached_start_eval(key)
    if reused is None:
        return key
    trainer.args.eval_on_start = False
    trainer.add_callback(logged_at_start(trainer, reused))
    log(f"evaluation on start: reused (loss {reused['eval_loss']:.4f}), measured by an earlier run on the same "
        "model files, validation blocks, precision and eval batch; training.reuse_start_eval=false measures it")
    return None
