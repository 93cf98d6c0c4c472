"""The human side of a checkpoint folder: the model card and the loss-curve picture."""

from __future__ import annotations

import json
from pathlib import Path

from hftoolkit.data.sources import looks_like_hub_id
from hftoolkit.models.registry import known_model
from hftoolkit.paths import resolve_data_path


def plot_loss_curve(log_history: list[dict], path: Path) -> None:
    """Train and eval loss against optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    for points, label, style in ((train, "train loss", "-"), (evals, "eval loss", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PIPELINE_TAGS = {"causal_lm": "text-generation", "masked_lm": "fill-mask", "classification": "text-classification"}


def model_card(recipe: dict, metrics: dict, task_class: str, terms: list[str] = ()) -> str:
    """README.md for the folder: a huggingface_hub ModelCard whose metadata (base model, license, hub datasets,
    metrics as model-index) the hub validates, and whose text says what data, how trained and the numbers."""
    from huggingface_hub import ModelCard

    data, training, model = recipe["data"], recipe["training"], recipe["model"]
    base = model["name"] or f"new {model['from_scratch']['architecture']} (trained from scratch)"
    name = Path(recipe["output"]["dir"]).name
    lines = [
        "---", card_metadata(recipe, metrics, name).to_yaml(), "---", "",
        f"# {name}", "",
        recipe.get("description") or "Fine-tuned with hftoolkit.", "",
        "## How it was made", "",
        f"- Base model: {base}",
        f"- Task: {model['task']}",
        f"- Training data: `{_source(data['train'])}` (format: {data['format']}); validation: "
        f"`{_source(data['validation']) if data['validation'] else str(data['validation_percent']) + '% split of the training data'}`",
        f"- Epochs: {training['epochs']}, max steps: {training['max_steps']}, batch size: {training['batch_size']}"
        f" x {training['gradient_accumulation']} accumulation, learning rate: {training['learning_rate']}",
        f"- LoRA: {'r=%d, alpha=%d' % (training['lora']['r'], training['lora']['alpha']) if training['lora']['enabled'] else 'no (all weights trained)'}",
        f"- Precision: {metrics.get('precision', training['precision'])}, seed: {training['seed']}",
        "- Full settings: `recipe.yaml` in this folder.", "",
    ]
    if terms:
        lines += ["## Terms of use", "",
                  "The base model's weights come under their own terms of use, which apply to this model too; they "
                  f"are kept in this folder: {', '.join(f'`{name}`' for name in terms)}. Read them before you use "
                  "or share it.", ""]
    lines += [
        "## Metrics", "", "| metric | value |", "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if not isinstance(v, dict)]
    lines += ["", "![loss curve](loss_curve.png)", "", "## How to load", "", "```python",
              f"from transformers import {task_class}, AutoTokenizer",
              'model = %s.from_pretrained("path/to/this/folder")' % task_class,
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", "",
              "Packing/preprocessing statistics:", "", "```json",
              json.dumps(metrics.get("preprocessing", {}), indent=2), "```", ""]
    return str(ModelCard("\n".join(lines)))  # parsing validates the metadata block


def card_metadata(recipe: dict, metrics: dict, name: str):
    """Hub metadata: the final eval metrics become model-index results on the validation data."""
    from huggingface_hub import EvalResult, ModelCardData

    data, model = recipe["data"], recipe["model"]
    base = None
    if model["name"]:
        known = known_model(model["name"])
        base = known.hub_id if known else (model["name"] if _is_hub_id(model["name"]) else None)
    hub_data = [spec for spec in (data["train"], data["validation"]) if isinstance(spec, str) and _is_hub_id(spec)]
    task = PIPELINE_TAGS[model["task"]]
    validation = _source(data["validation"]) if data["validation"] else f"{_source(data['train'])} (split)"
    results = [EvalResult(task_type=task, dataset_type=hub_data[-1] if hub_data else "custom",
                          dataset_name=validation, metric_type=key.removeprefix("eval_"), metric_value=value,
                          metric_name=key.replace("_", " "))
               for key, value in metrics.items()
               if key.startswith("eval_") and not key.endswith("_start") and isinstance(value, (int, float))
               and key not in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")]
    return ModelCardData(base_model=base, license=recipe["output"].get("license"), library_name="transformers",
                         tags=["hftoolkit", model["task"]], pipeline_tag=task, datasets=sorted(set(hub_data)) or None,
                         model_name=name, eval_results=results or None)


def _is_hub_id(spec: str) -> bool:
    """OWNER/NAME that is not a local path: worth naming in hub metadata."""
    return "/" in spec and looks_like_hub_id(spec) and not Path(resolve_data_path(spec)).exists()


def _source(spec) -> str:
    """A data source as saved in recipe.yaml (database URIs already masked)."""
    if isinstance(spec, dict):
        return f"{spec['uri']} " + (f"table {spec['table']}" if spec.get("table") else f"query {spec['query']}")
    return str(spec)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
