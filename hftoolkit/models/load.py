"""Step 3: the tokenizer and model a recipe trains (pretrained, pulled, or from scratch)."""

from __future__ import annotations

from pathlib import Path

from hftoolkit.checkpoint.open import open_model, open_tokenizer
from hftoolkit.errors import UserError
from hftoolkit.hub.endpoint import cached_on_this_machine, hub_endpoint, hub_reachable
from hftoolkit.models.registry import KNOWN_MODELS, known_model, pull
from hftoolkit.models.scratch import check_scratch_config, scratch_config, train_tokenizer
from hftoolkit.models.templates import ensure_chat_template
from hftoolkit.recipe.schema import ModelSection, Recipe

AUTO_CLASSES = {"causal_lm": "AutoModelForCausalLM", "masked_lm": "AutoModelForMaskedLM",
                "classification": "AutoModelForSequenceClassification"}


def check_model_source(name: str | None, field: str = "model.name") -> None:
    """Cheap check that `name` can be resolved: a checkpoint folder, a known short name or a hub id."""
    if not name:
        raise UserError(f"{field} is empty; give a short name ({', '.join(KNOWN_MODELS)}), a hub id, "
                        "a local folder, or use model.from_scratch")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{field}: folder '{name}' has no config.json; point at a Hugging Face checkpoint")
        return
    if known_model(name):
        return
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local or "/" not in name:
        raise UserError(f"{field}: '{name}' is not a local folder, a known model ({', '.join(KNOWN_MODELS)}) "
                        "or a hub id (org/name)")


def check_model(model: ModelSection) -> None:
    """model.name names something loadable, or model.from_scratch is a config its architecture accepts."""
    if model.from_scratch:
        check_scratch_config(model.from_scratch)
    else:
        check_model_source(model.name)


def resolve_model_path(name: str, log=print, field: str = "model.name") -> str:
    """A local folder for `name`: as given, pulled for known models, else the hub id itself (refused at
    once when it is not cached and the hub cannot be reached)."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if known_model(name):
        return str(pull(name, log=log))
    if not cached_on_this_machine(name) and not hub_reachable():
        raise UserError(f"{field}: '{name}' is not a local folder or a cached model, and the hub at {hub_endpoint()} "
                        f"cannot be reached; check the name, set HF_ENDPOINT, or use a local folder or one of "
                        f"{', '.join(KNOWN_MODELS)}")
    return name


def load_pretrained(recipe: Recipe, log=print, head: dict | None = None):
    """(tokenizer, model) from model.name; pad token fixed up so padding never hides EOS from the loss."""
    import transformers

    source = resolve_model_path(recipe.model.name, log)
    auto = AUTO_CLASSES[recipe.model.task]
    kwargs = dict(head or {})  # classification: num_labels, id2label, label2id, problem_type
    transformers.set_seed(recipe.training.seed)  # new heads (classifier, LoRA) start the same every run
    label = f"model.name: '{recipe.model.name}'"
    trust = recipe.model.trust_remote_code
    if trust:
        log(f"warning: model.trust_remote_code is on: Python code shipped with '{recipe.model.name}' runs in this "
            "process with your permissions")
    tokenizer = open_tokenizer(source, label, trust)
    model = open_model(source, auto, label, trust, **kwargs)
    if recipe.data.format != "text" and recipe.model.task == "causal_lm":  # qa, chat, preference, rated
        ensure_chat_template(tokenizer, model.config.model_type, log)
    if tokenizer.pad_token is None:
        # A distinct pad token: padding positions are masked, EOS keeps its own id and stays learned.
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def build_from_scratch(recipe: Recipe, train_texts, corpus_hash: str, log=print, head: dict | None = None):
    """(tokenizer, model): a tokenizer trained on the corpus and a randomly initialised model."""
    import transformers

    settings = recipe.model.from_scratch
    tokenizer = train_tokenizer(train_texts, settings, corpus_hash, log=log)
    config = scratch_config(settings, tokenizer, recipe.preprocess.block_size)
    for key, value in (head or {}).items():
        setattr(config, key, value)
    auto = getattr(transformers, AUTO_CLASSES[recipe.model.task])
    transformers.set_seed(recipe.training.seed)
    try:
        model = auto.from_config(config)
    except ValueError as exc:
        raise UserError(f"model.from_scratch: {config.model_type} has no {recipe.model.task} head ({exc})") from None
    log(f"model: new {config.model_type} with {model.num_parameters() / 1e6:.2f}M parameters")
    if recipe.data.format in ("qa", "chat") and recipe.model.task == "causal_lm":
        ensure_chat_template(tokenizer, config.model_type, log)
    return tokenizer, model


def add_lora(model, recipe: Recipe):
    """Wrap `model` with peft LoRA adapters as the recipe asks."""
    from peft import LoraConfig, TaskType, get_peft_model

    lora = recipe.training.lora
    targets = lora.target_modules[0] if lora.target_modules == ["all-linear"] else lora.target_modules
    task = {"causal_lm": TaskType.CAUSAL_LM, "classification": TaskType.SEQ_CLS}.get(recipe.model.task)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                        task_type=task)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise UserError(f"training.lora.target_modules: {exc}") from None
