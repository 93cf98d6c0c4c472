"""Step 5: write the checkpoint folder — plain Hugging Face files plus how it was made.

Files are written to a staging folder and moved in at the end, `metrics.json`
last, so a crash never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from hftoolkit.checkpoint.card import model_card, plot_loss_curve
from hftoolkit.checkpoint.output_dir import FINISHED_MARKER
from hftoolkit.models.load import AUTO_CLASSES


def save_checkpoint(out: Path, model, tokenizer, recipe: dict, metrics: dict, log_history: list[dict],
                    index_record: dict | None = None) -> None:
    """`index_record` ({retriever, top_k, passage_tokens}) writes retrieval.json: the index the model
    learned to read, used by `generate` by default."""
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lora = recipe["training"]["lora"]
    if lora["enabled"]:
        model.save_pretrained(str(staging / "adapter"))
        if lora["save_merged"]:
            model = model.merge_and_unload()
    if not lora["enabled"] or lora["save_merged"]:
        set_generation_defaults(model, tokenizer, recipe["output"].get("num_beams", 1))
        model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    (staging / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    from hftoolkit.retrieval.checkpoint_index import RECORD_FILE, record_index

    if index_record:
        record_index(staging, **index_record)
    else:
        (out / RECORD_FILE).unlink(missing_ok=True)  # a resumed or replaced run must not inherit one
    if log_history:
        plot_loss_curve(log_history, staging / "loss_curve.png")
    (staging / "README.md").write_text(model_card(recipe, metrics, AUTO_CLASSES[recipe["model"]["task"]]))
    (staging / "trainer_log.json").write_text(json.dumps(log_history, indent=1))
    (staging / FINISHED_MARKER).write_text(json.dumps(metrics, indent=2))
    for item in sorted(staging.iterdir(), key=lambda p: p.name == FINISHED_MARKER):
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    staging.rmdir()


def set_generation_defaults(model, tokenizer, num_beams: int = 1) -> None:
    """generation_config carries the pad/eos ids training used, so generation stops where it learned to,
    and the recipe's beam width (`output.num_beams`), so any generate() searches that way by default."""
    gen = getattr(model, "generation_config", None)
    if gen is None:
        return
    if num_beams > 1:
        gen.num_beams, gen.early_stopping = num_beams, True
    gen.pad_token_id = tokenizer.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if gen.bos_token_id is None and tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
