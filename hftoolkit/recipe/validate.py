"""Schema checks on a typed recipe: ranges and combinations of settings, nothing that opens a file.

Checks that need the data, the model or the corpus index live with the stage that loads them
(`data.checks`, `models.load.check_model`, `retrieval.checks`); `train.run.check_before_training` runs them all,
once, before anything expensive."""

from __future__ import annotations

from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.hub.share import check_repo_id
from hftoolkit.recipe.schema import Recipe

POSITIVE = {
    "preprocess.block_size": lambda r: r.preprocess.block_size,
    "training.batch_size": lambda r: r.training.batch_size,
    "training.eval_batch_size": lambda r: r.training.eval_batch_size,
    "training.gradient_accumulation": lambda r: r.training.gradient_accumulation,
    "training.learning_rate": lambda r: r.training.learning_rate,
    "training.eval_steps": lambda r: r.training.eval_steps,
    "training.logging_steps": lambda r: r.training.logging_steps,
    "training.save_steps": lambda r: r.training.save_steps,
    "output.num_beams": lambda r: r.output.num_beams,
}


def validate(recipe: Recipe) -> None:
    """Raise UserError on the first problem, naming the field and the fix."""
    model = recipe.model
    if model.name and model.from_scratch:
        raise UserError("model.name and model.from_scratch are both set; keep one")
    if model.from_scratch and recipe.data.format != "text":
            raise UserError(f"data.format: {recipe.data.format} needs a pretrained chat model (model.name); a "
                            "from-scratch model learns its tokenizer from plain text and has no chat template: "
                        "use data.format: text")
    for field, get in POSITIVE.items():
        if get(recipe) <= 0:
            raise UserError(f"{field}: {get(recipe)} must be greater than 0")
    if recipe.preprocess.num_proc < 0:
        raise UserError(f"preprocess.num_proc: {recipe.preprocess.num_proc} must be 0 (automatic) or more")
    if recipe.training.epochs <= 0 and recipe.training.max_steps <= 0:
        raise UserError("training.epochs must be > 0 (or set training.max_steps)")
    if recipe.training.lora.enabled and model.from_scratch:
        raise UserError("training.lora.enabled needs a pretrained model.name; a from-scratch model trains fully")
    lora = recipe.training.lora
    if recipe.output.num_beams > 1 and lora.enabled and not lora.save_merged:
        raise UserError(f"output.num_beams: {recipe.output.num_beams} is saved in the merged model's "
                        "generation_config.json, and training.lora.save_merged is false (adapter only); "
                        "set training.lora.save_merged: true or output.num_beams: 1")
    if not recipe.data.train:
        raise UserError("data.train is empty; name a file, folder, glob or hub dataset id")
    check_retrieval(recipe)
    check_method(recipe)
    check_streaming(recipe)
    if model.task != "causal_lm" and recipe.data.format != "text":
        raise UserError(f"data.format: {recipe.data.format} works with model.task: causal_lm; "
                        f"{model.task} reads a text column (data.format: text)")
    if recipe.data.extra_text and recipe.data.format == "text":
        raise UserError("data.extra_text is for qa/chat data; with data.format: text put the files in data.train")
    if not recipe.output.dir:
        raise UserError("output.dir is empty; set it in the recipe or pass --output-dir")
    if recipe.output.push_to:
        check_repo_id(recipe.output.push_to, "output.push_to")


def check_streaming(recipe: Recipe) -> None:
    """A streamed corpus has no length: the run needs a length of its own, and only packed text streams."""
    data, training = recipe.data, recipe.training
    if training.max_tokens is not None:
        if training.max_tokens <= 0:
            raise UserError(f"training.max_tokens: {training.max_tokens} must be greater than 0")
        if training.max_steps > 0:
            raise UserError("training.max_tokens and training.max_steps are both set; keep one")
        if training.method != "sft":
            raise UserError(f"training.max_tokens: counts blocks of SFT training; with training.method: "
                            f"{training.method} set training.max_steps")
    if data.shuffle_buffer < 0:
        raise UserError(f"data.shuffle_buffer: {data.shuffle_buffer} must be 0 (corpus order) or more")
    if not data.streaming:
        return
    if training.max_steps <= 0 and training.max_tokens is None:
        raise UserError("data.streaming: a streamed corpus has no known length; set training.max_steps or "
                        "training.max_tokens")
    if data.format not in ("text", "qa", "chat") or recipe.model.task != "causal_lm" or training.method != "sft":
        raise UserError(f"data.streaming: streams text, qa or chat data for causal_lm fine-tuning (training.method: "
                        f"sft); this recipe has data.format: {data.format}, model.task: {recipe.model.task}: set "
                        "data.streaming: false")
    if data.retrieval is not None or data.extra_text:
        raise UserError(f"data.{'retrieval' if data.retrieval is not None else 'extra_text'}: not with "
                        "data.streaming (retrieved passages and extra text are prepared for the whole set); set "
                        "data.streaming: false")
    if data.max_train_samples is not None:
        raise UserError("data.max_train_samples: not with data.streaming (the run stops at training.max_steps)")
    if data.format == "text" and not recipe.preprocess.packing:
        raise UserError("preprocess.packing: false is not streamed; streaming packs blocks (set packing: true)")
    if not data.validation and data.validation_documents <= 0:
        raise UserError(f"data.validation_documents: {data.validation_documents} must be greater than 0 (or set "
                        "data.validation)")


def planned_steps(recipe: Recipe) -> int:
    """training.max_steps, or the steps that training.max_tokens asks for."""
    training = recipe.training
    if training.max_tokens is None:
        return training.max_steps
    per_step = training.batch_size * training.gradient_accumulation * recipe.preprocess.block_size
    return -(-training.max_tokens // per_step)


PREFERENCE_FORMATS = {"dpo": ("preference",), "kto": ("rated", "preference")}


def check_method(recipe: Recipe) -> None:
    """Preference tuning reads preference/rated data into a pretrained causal LM; SFT reads the other formats."""
    method, data_format = recipe.training.method, recipe.data.format
    if method == "sft":
        if data_format in ("preference", "rated"):
            raise UserError(f"data.format: {data_format} trains with training.method: "
                            f"{'dpo or kto' if data_format == 'preference' else 'kto'}; set it, or use qa/chat data")
        return
    if data_format not in PREFERENCE_FORMATS[method]:
        raise UserError(f"training.method: {method} reads data.format: {' or '.join(PREFERENCE_FORMATS[method])}, "
                        f"not {data_format}")
    if recipe.model.task != "causal_lm" or not recipe.model.name:
        raise UserError(f"training.method: {method} tunes a pretrained causal LM; set model.name (e.g. a checkpoint "
                        "trained by a qa recipe) and model.task: causal_lm")
    if recipe.data.retrieval is not None or recipe.data.extra_text:
        raise UserError(f"training.method: {method} takes passages from the prompts themselves; remove "
                        "data.retrieval and data.extra_text")
    train = recipe.data.train
    if isinstance(train, str) and Path(train).suffix in (".jsonl", ".json", ".csv", ".parquet") \
            and "://" not in train and not Path(train).expanduser().exists():
        made_by = {"preference": f"`hftoolkit data mistakes CHECKPOINT --data QA.jsonl --out {train}` (a model's "
                                 f"wrong answers) or `hftoolkit data export-log URI --as preference --out {train}`",
                   "rated": f"`hftoolkit data export-log URI --as rated --out {train}`"}[data_format]
        raise UserError(f"data.train: '{train}' does not exist yet; write it with {made_by}")
    if recipe.training.preference.beta <= 0:
        raise UserError(f"training.preference.beta: {recipe.training.preference.beta} must be greater than 0")
    if recipe.training.early_stopping_patience is not None or recipe.training.answer_accuracy:
        raise UserError(f"training.method: {method} has no answer-accuracy evaluation or early stopping; remove "
                        "training.early_stopping_patience and training.answer_accuracy")


def check_retrieval(recipe: Recipe) -> None:
    """data.retrieval and answer-accuracy settings that cannot work, caught before anything loads."""
    training, retrieval = recipe.training, recipe.data.retrieval
    if training.answer_accuracy and recipe.data.format != "qa":
        raise UserError("training.answer_accuracy needs data.format: qa (questions with key_facts or answers)")
    if training.best_metric == "answer_accuracy" and not training.answer_accuracy:
        raise UserError("training.best_metric: answer_accuracy needs training.answer_accuracy: true")
    if retrieval is None:
        return
    if recipe.data.format != "qa":
        raise UserError("data.retrieval works with data.format: qa; remove it or use question/answer data")
    if not retrieval.index:
        raise UserError("data.retrieval.index is empty; name the index folder (built by `hftoolkit index build`)")
    for field in ("top_k", "context_tokens", "chunk_tokens"):
        if getattr(retrieval, field) <= 0:
            raise UserError(f"data.retrieval.{field}: {getattr(retrieval, field)} must be greater than 0")
    if retrieval.sentences < 0:
        raise UserError(f"data.retrieval.sentences: {retrieval.sentences} must be 0 (whole chunks) or more")
    for field in ("distractor_percent", "counterfactual_percent"):
        if not 0 <= getattr(retrieval, field) <= 100:
            raise UserError(f"data.retrieval.{field}: {getattr(retrieval, field)} must be 0 to 100")
    if retrieval.context_tokens >= recipe.preprocess.block_size:
        raise UserError(f"data.retrieval.context_tokens ({retrieval.context_tokens}) must be below "
                        f"preprocess.block_size ({recipe.preprocess.block_size}), which must also hold the "
                        "question and the answer")
