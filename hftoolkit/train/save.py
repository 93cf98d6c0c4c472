"""Step 5: write the checkpoint folder — plain Hugging Face files plus how it was made.

Files are written to a staging folder (`safe_write.write_into_folder`) and moved in at the end, `metrics.json`
last, so a crash never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from hftoolkit.checkpoint.output_dir import FINISHED_MARKER, record_written
from hftoolkit.checkpoint.portable import portable_path, portable_recipe
from hftoolkit.models.load import AUTO_CLASSES
from hftoolkit.models.registry import KNOWN_MODELS, base_terms, pulled_folder
from hftoolkit.retrieval.checkpoint_index import RECORD_FILE, record_index
from hftoolkit.safe_write import write_into_folder
from hftoolkit.train.card import model_card, plot_loss_curve


def save_checkpoint(out: Path, model, tokenizer, recipe: dict, metrics: dict, log_history: list[dict],
                    index_record: dict | None = None) -> None:
    """`index_record` ({retriever, top_k, passage_tokens}) writes retrieval.json: the index the model
    learned to read, used by `generate` by default."""
    terms = base_terms(recipe["model"]["name"]) if recipe["model"].get("name") else []
    recipe = portable_recipe(recipe, out)  # what the folder says of its making names no local path

    def write(staging: Path) -> None:
        nonlocal model
        lora = recipe["training"]["lora"]
        if lora["enabled"]:
            model.save_pretrained(str(staging / "adapter"))
            portable_adapter_config(staging / "adapter", out / "adapter")
            if lora["save_merged"]:
                model = model.merge_and_unload()
        if not lora["enabled"] or lora["save_merged"]:
            set_generation_defaults(model, tokenizer, recipe["output"].get("num_beams", 1))
            model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        if index_record:
            record_index(staging, **index_record, checkpoint=out)
        else:
            (out / RECORD_FILE).unlink(missing_ok=True)  # a resumed or replaced run must not inherit one
        if log_history:
            plot_loss_curve(log_history, staging / "loss_curve.png")
        for file in terms:  # the base weights' terms of use apply to what is trained from them: they travel along
            shutil.copy(file, staging / file.name)
        (staging / "README.md").write_text(model_card(recipe, metrics, AUTO_CLASSES[recipe["model"]["task"]],
                                                      terms=[file.name for file in terms]))
        (staging / "trainer_log.json").write_text(json.dumps(log_history, indent=1))
        (staging / FINISHED_MARKER).write_text(json.dumps(metrics, indent=2))

    # recorded before they land: a crash mid-move stays ours
    write_into_folder(out, write, last=FINISHED_MARKER,
                      before_move=lambda items, staging: record_written(out, items, staged_in=staging))


def portable_adapter_config(staged: Path, final: Path) -> None:
    """adapter_config.json (and peft's README.md beside it) name the base by hub id when it is a known model
    (not our cache folder, which is under the user's home), else by a path relative to where the adapter will be."""
    config_file = staged / "adapter_config.json"
    config = json.loads(config_file.read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        return
    known = {str(pulled_folder(m).resolve()): m.hub_id for m in KNOWN_MODELS.values()}
    local = str(Path(base).expanduser().resolve()) if base.startswith(("/", "~")) else base
    config["base_model_name_or_path"] = known.get(local, portable_path(base, final))
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    card = staged / "README.md"
    if card.is_file() and config["base_model_name_or_path"] != base:
        card.write_text(card.read_text().replace(base, config["base_model_name_or_path"]))


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
