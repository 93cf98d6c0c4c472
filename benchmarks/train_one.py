"""One training run (one case, one variant) in a process of its own, so peak RSS and bytes written are its own.

    python -m benchmarks.train_one CASE VARIANT OUT_DIR STEPS

Prints one JSON line: real tokens, train time, steady-state step rate, padding, peak RSS, bytes written,
and the eval loss that one evaluator (`evaluate_model`) gives every variant after the same steps.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

from hftoolkit.allocator import loaded_tcmalloc

CASES = {  # name: (recipe, data kind, what it shows, overrides of the bundled recipe)
    "smollm2_full_text": ("cars_lm", "text", "SmolLM2-135M full fine-tune on the car corpus text", []),
    "smollm2_lora_text": ("cars_lm", "text", "SmolLM2-135M LoRA on the car corpus text",
                          ["training.lora.enabled=true", "training.learning_rate=1e-3"]),
    "smollm2_lora_qa": ("cars_qa", "qa", "SmolLM2-135M LoRA on the car QA pairs (no retrieval)", []),
    "smollm2_full_qa": ("cars_qa", "qa", "SmolLM2-135M full fine-tune on the car QA pairs (no retrieval)",
                        ["training.lora.enabled=false", "training.learning_rate=2e-4"]),
    "gpt_scratch_text": ("gpt_from_scratch", "text", "from-scratch GPT-2 (4x192) on the car corpus text", []),
}
# baseline: at its best (bf16 where the hardware has it, per-batch padding); baseline_fp32: the same in fp32
VARIANTS = ("hftoolkit", "baseline", "baseline_fp32")


def bytes_written() -> int:
    for line in open("/proc/self/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


class Meter:
    """Step times and token counts from Trainer callbacks and a counting collator."""

    def __init__(self):
        self.steps, self.real, self.slots, self._tokens, self._started = [], 0, 0, 0, None  # real/slots: padding
        self.first_step_began = None  # perf_counter at the first step: what a run pays before it
        self.training = True
        self.eval_seconds = 0.0  # evaluations the run asks for during training (inside the train time)

    def watch(self, trainer):
        """Time the trainer's evaluations while it trains, so throughput can also be read without them."""
        evaluation_loop = trainer.evaluation_loop

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return evaluation_loop(*args, **kwargs)
            finally:
                if self.training:
                    self.eval_seconds += time.perf_counter() - started

        trainer.evaluation_loop = timed

    def wrap(self, collate, model):
        def counting(features):
            batch = collate(features)
            if self.training and model.training:  # evaluation batches are collated with the model in eval mode
                self.slots += batch["input_ids"].numel()
                self.real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else \
                    batch["input_ids"].numel()
            return batch
        return counting

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                meter._started = time.perf_counter()
                if meter.first_step_began is None:
                    meter.first_step_began = meter._started

            def on_step_end(self, args, state, control, **kwargs):
                meter.steps.append((time.perf_counter() - meter._started, state.num_input_tokens_seen - meter._tokens))
                meter._tokens = state.num_input_tokens_seen

            def on_train_end(self, args, state, control, **kwargs):
                meter.training = False

        return StepTimer()

    def tokens(self) -> int:
        """Real tokens trained, as the Trainer counts them (attention mask) for every variant."""
        return sum(tokens for _, tokens in self.steps)

    def steady_rate(self) -> float:
        """Median real tokens/s over the steps after the first (compilation, warm-up)."""
        later = self.steps[1:] or self.steps
        return statistics.median(tokens / seconds for seconds, tokens in later)


def case_recipe(case: str, variant: str, out: Path, steps: int, more: tuple[str, ...] = ()):
    """The case's recipe for `steps` steps into `out`; `more`: further KEY=VALUE overrides."""
    from hftoolkit.recipe.load import load_recipe

    recipe_name, kind, _, changes = CASES[case]
    overrides = [f"output.dir={out}", f"training.max_steps={steps}", *changes, *more]
    if kind == "qa":
        overrides.append("data.retrieval=null")
    return load_recipe(recipe_name, overrides)


def run_hftoolkit(recipe, meter: Meter):
    import hftoolkit.train.run as run

    built = {}
    original = run.build_trainer

    def build_with_meter(*args, **kwargs):
        trainer, precision = original(*args, **kwargs)
        trainer.data_collator = meter.wrap(trainer.data_collator, trainer.model)
        trainer.add_callback(meter.callback())
        meter.watch(trainer)
        built["trainer"] = trainer
        return trainer, precision

    run.build_trainer = build_with_meter
    metrics = run.train(recipe, overwrite=True, log=lambda message: None)
    trainer = built["trainer"]
    return trainer.model, trainer.processing_class, metrics["train_runtime_seconds"], metrics["precision"]


def run_baseline(recipe, kind: str, out: Path, meter: Meter, reference: Path | None, precision: str):
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from benchmarks import baseline
    from hftoolkit.models.load import resolve_model_path
    from hftoolkit.paths import resolve_data_path

    transformers.set_seed(recipe.training.seed)
    if recipe.model.from_scratch:  # same tokenizer and config as hftoolkit's run, fresh weights
        tokenizer = AutoTokenizer.from_pretrained(reference)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(reference))
    else:
        source = str(resolve_model_path(recipe.model.name, lambda m: None))
        tokenizer, model = AutoTokenizer.from_pretrained(source), AutoModelForCausalLM.from_pretrained(source)
    if kind == "text":
        files = sorted(str(p) for p in Path(resolve_data_path(recipe.data.train)).glob("*.txt"))
        dataset = baseline.text_dataset(files, tokenizer, recipe.preprocess.block_size)
    else:
        rows = [json.loads(line) for line in Path(resolve_data_path(recipe.data.train)).read_text().splitlines()]
        dataset = baseline.qa_dataset(rows, tokenizer, recipe.data.system_prompt, recipe.preprocess.block_size)
    if recipe.training.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = recipe.training.lora
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer, metrics = baseline.train(model, tokenizer, dataset, out, recipe.training, recipe.training.max_steps,
                                      measure=meter, precision=precision, padded_per_batch=kind == "qa")
    return trainer.model, tokenizer, metrics["train_runtime"], precision


def evaluate_model(model, tokenizer, recipe, kind: str) -> dict:
    """The same evaluators for every variant. Text: held-out loss two ways, hftoolkit's (paragraphs with
    EOS, each on its own) and run_clm's (lines concatenated into blocks); QA: answer-token loss."""
    import torch

    from hftoolkit.paths import resolve_data_path

    model.eval()
    if kind == "text":
        from benchmarks.baseline import text_dataset
        from hftoolkit.evaluation.perplexity import text_perplexity

        heldout = Path(resolve_data_path(recipe.data.validation))
        texts = [p for p in heldout.read_text().split("\n\n") if p.strip()]
        packed = text_perplexity(model, tokenizer, texts, block_size=recipe.preprocess.block_size)["loss"]
        blocks = text_dataset([str(heldout)], tokenizer, recipe.preprocess.block_size)["input_ids"]
        separator = whitespace_only_tokens(tokenizer)
        total = count = words_total = words_count = 0
        with torch.inference_mode():
            for start in range(0, len(blocks), 8):
                ids = torch.tensor(blocks[start:start + 8])
                logits = model(input_ids=ids).logits[:, :-1].float()
                targets = ids[:, 1:]
                losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
                words = ~torch.isin(targets, separator)
                total, count = total + float(losses.sum()), count + targets.numel()
                words_total, words_count = words_total + float(losses[words].sum()), words_count + int(words.sum())
        return {"eval_loss": packed, "eval_loss_run_clm": total / count,
                "eval_loss_run_clm_words": words_total / words_count}
    from datasets import Dataset

    from hftoolkit.data.chat_format import encode_chat_dataset

    rows = [json.loads(line) for line in Path(resolve_data_path(recipe.data.validation)).read_text().splitlines()]
    encoded = encode_chat_dataset(Dataset.from_list(rows), tokenizer, recipe.data, recipe.preprocess.block_size)
    total, count = 0.0, 0
    with torch.inference_mode():
        for row in encoded:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = model(input_ids=ids).logits[0, :-1].float()
            targets = labels[0, 1:]
            total += float(torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum"))
            count += int((targets != -100).sum())
    return {"eval_loss": total / count}


def whitespace_only_tokens(tokenizer):
    """Ids of the tokens that decode to whitespace alone: in run_clm's blocks they are the line breaks
    between paragraphs, where a model trained on separate documents learned an end-of-text token instead."""
    import torch

    ids = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()
           and i not in tokenizer.all_special_ids]
    return torch.tensor(ids, dtype=torch.long)


def model_shape(model) -> dict:
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"layers": layers, "hidden": hidden, "parameters": parameters, "trainable": trainable}


def main() -> None:
    case, variant, out, steps = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    reference = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    started, written = time.perf_counter(), bytes_written()
    recipe = case_recipe(case, variant, out, steps)
    kind = CASES[case][1]
    meter = Meter()
    shape = None
    if variant.startswith("baseline"):
        from benchmarks.baseline import best_precision

        precision = "fp32" if variant == "baseline_fp32" else best_precision()
        model, tokenizer, train_seconds, precision = run_baseline(recipe, kind, out, meter, reference, precision)
    else:
        model, tokenizer, train_seconds, precision = run_hftoolkit(recipe, meter)
    shape = model_shape(model)
    wall = time.perf_counter() - started
    disk = bytes_written() - written
    losses = {k: round(v, 4) for k, v in evaluate_model(model, tokenizer, recipe, kind).items()}
    print(json.dumps({
        "case": case, "variant": variant, "steps": len(meter.steps), "precision": precision,
        "real_tokens": meter.tokens(), "padding_percent": round(100 * (1 - meter.real / meter.slots), 1),
        "train_seconds": round(train_seconds, 2), "tokens_per_second": round(meter.tokens() / train_seconds, 2),
        "steady_tokens_per_second": round(meter.steady_rate(), 2), "sequence": recipe.preprocess.block_size,
        "eval_seconds": round(meter.eval_seconds, 2),
        "tokens_per_second_without_eval": round(meter.tokens() / (train_seconds - meter.eval_seconds), 2),
        "wall_seconds": round(wall, 1), "end_to_end_tokens_per_second": round(meter.tokens() / wall, 2),
        "before_first_step_seconds": round(meter.first_step_began - started, 1),
        "first_step_seconds": round(meter.steps[0][0], 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "disk_written_mb": round(disk / 2 ** 20, 1), "allocator": "tcmalloc" if loaded_tcmalloc() else "libc",
        **losses, **shape}))


if __name__ == "__main__":
    main()
