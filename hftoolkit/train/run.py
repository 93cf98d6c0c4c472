"""`hftoolkit train`: recipe → data → tokenize/pack → model → Trainer → checkpoint, read top to bottom."""

from __future__ import annotations

import time
from pathlib import Path

from hftoolkit.allocator import describe
from hftoolkit.checkpoint.output_dir import (
    TRAINER_DIR,
    check_disk_space,
    check_output_dir,
    check_resume_matches,
    claim_output_dir,
    clear_run,
    last_trainer_checkpoint,
)
from hftoolkit.checkpoint.publish import push_checkpoint
from hftoolkit.data.chat_format import chat_stats, encode_chat_dataset, row_encoder, show_loss_mask
from hftoolkit.data.labels import inverse_frequency_weights, label_names
from hftoolkit.data.pack import block_stats, pack_dataset, tokenize_documents
from hftoolkit.data.preprocess import preprocess
from hftoolkit.data.retrieval_examples import attach_passages
from hftoolkit.data.sources import describe as describe_source
from hftoolkit.data.splits import load_data
from hftoolkit.data.stream_documents import DocumentSource
from hftoolkit.data.stream_position import read_position
from hftoolkit.data.stream_splits import load_streamed
from hftoolkit.errors import TrainingStopped
from hftoolkit.models.load import add_lora, build_from_scratch, load_pretrained
from hftoolkit.recipe.load import to_dict
from hftoolkit.recipe.schema import Recipe
from hftoolkit.recipe.validate import planned_steps
from hftoolkit.train import distributed, warm_memory
from hftoolkit.train.answer_eval import AnswerAccuracy
from hftoolkit.train.arguments import training_arguments
from hftoolkit.train.checks import check_before_training
from hftoolkit.train.distributed import is_main
from hftoolkit.train.heads import collator_for, compute_metrics_for
from hftoolkit.train.metrics import headline, perplexity
from hftoolkit.train.precision import resolve_precision
from hftoolkit.train.preference import train_preference
from hftoolkit.train.run_lock import output_lock
from hftoolkit.train.save import save_checkpoint
from hftoolkit.train.start_eval import reuse_start_eval, store_start_eval
from hftoolkit.train.tensorboard import tensorboard_callback


def train(recipe: Recipe, resume: bool = False, overwrite: bool = False, log=print, force: bool = False) -> dict:
    """Run a validated recipe end to end; returns the metrics written to metrics.json. `force` resumes
    even when the recipe or data changed since the run started. One run at a time per output folder.

    Under torchrun/accelerate every rank runs this; rank 0 alone writes (see `train.distributed`)."""
    with output_lock(recipe.output.dir):
        if recipe.training.method != "sft":
            return train_preference(recipe, resume=resume, overwrite=overwrite, log=log, force=force)
        return train_sft(recipe, resume, overwrite, log, force)


def train_sft(recipe: Recipe, resume: bool, overwrite: bool, log, force: bool) -> dict:
    """Supervised training (causal LM, masked LM, classification): `train` with the output folder held."""
    check_before_training(recipe)
    out = check_output_dir(recipe.output.dir, resume, overwrite)
    warm = warm_memory.start(recipe, log)  # pages for the first steps, written while data and model load
    from hftoolkit.train.cpu_kernels import restore  # heavy: torch and the Trainer, once the recipe passed its checks
    from hftoolkit.train.stopping import SafeCheckpoints  # heavy: so that bad input fails in well under a second

    distributed.wait_for_everyone()  # every rank has checked the folder before rank 0 writes into it
    log = log if distributed.is_main() else (lambda message: None)
    check_resume = resume and not force
    if check_resume:  # a changed recipe or process count is refused before anything loads
        check_resume_matches(out, to_dict(recipe), None)
    saved_stream = None
    if resume and recipe.data.streaming:
        saved_stream = read_position(last_trainer_checkpoint(out), distributed.rank(), distributed.world_size())
    started = time.time()

    with distributed.main_first():  # rank 0 fills the caches (data, model, index, tokens); the others reuse them
        if recipe.data.streaming:
            loaded = load_streamed(recipe.data)
            log(f"data: streaming the training documents from {describe_source(recipe.data.train)}; "
                f"{len(loaded.validation)} validation documents")
        else:
            loaded = load_data(recipe.data, recipe.training.seed, recipe.model.task)
            log(f"data: {len(loaded.train)} training and {len(loaded.validation)} validation documents" +
                "".join(f"; skipped {n} empty or null {split} rows" for split, n in (loaded.skipped or {}).items()))
        if check_resume and recipe.data.retrieval is None:  # changed data: refused before the model loads
            check_resume_matches(out, to_dict(recipe), loaded.content_hash)
        labels = None
        if recipe.model.task == "classification":
            labels = label_names([loaded.train, loaded.validation], recipe.data.label_column,
                                 recipe.model.problem_type)
            log(f"labels ({len(labels)}): {', '.join(labels)}" if labels else "labels: regression (one number)")
        tokenizer, model = setup_model(recipe, loaded, labels, log)
        retriever = None
        if recipe.data.retrieval is not None:
            loaded, retriever = attach_passages(loaded, recipe, tokenizer, log)
        if recipe.data.streaming:
            blocks, stats = streamed_blocks(recipe, loaded, tokenizer)
        else:
            blocks, stats, hit = preprocess(recipe, loaded, tokenizer, labels)
    if warm is not None and recipe.data.format != "text":
        warm.add_rows(recipe, stats["train"].get("max_length"))  # streamed rows: block_size
    if check_resume and recipe.data.retrieval is not None:  # the index's fingerprint is part of the data
        check_resume_matches(out, to_dict(recipe), loaded.content_hash)
    if saved_stream is not None:
        blocks["train"].load_state_dict(saved_stream)  # its position, waiting tokens and shuffle buffer
        log(f"data: the stream goes on from its checkpoint (document {blocks['train'].documents}, "
            f"epoch {blocks['train'].epoch}), nothing read again")
    if recipe.data.streaming:
        log("preprocessing: streamed (training documents are tokenized and packed as training reads them)")
    else:
        log(f"preprocessing: cache {'hit, reusing' if hit else 'miss, tokenized'} ({'same' if hit else 'new'} "
            "data, tokenizer and preprocess settings)")
    for split, numbers in stats.items():
        log(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
    if recipe.model.task == "causal_lm" and recipe.data.format != "text":
        shown = blocks["validation"] if recipe.data.streaming else blocks["train"]  # a stream is read once
        example = next(row for row in shown if -100 in row["labels"][:8])  # a chat example, not text
        log("one training example (learned tokens in [[ ]]):\n" + show_loss_mask(example, tokenizer))

    if distributed.is_main():
        if overwrite and out.exists() and any(out.iterdir()):
            clear_run(out, log)  # only now: bad input above must never cost the user an old run
        claim_output_dir(out, to_dict(recipe), loaded.content_hash)
        check_disk_space(out, model)
    distributed.wait_for_everyone()
    answer_accuracy = None
    if recipe.training.answer_accuracy:
        answer_accuracy = AnswerAccuracy(list(loaded.validation), recipe, tokenizer)

    safe = SafeCheckpoints(final_save=recipe.output.keep_training_state)
    trainer, precision = build_trainer(recipe, model, tokenizer, blocks, out, labels, answer_accuracy, safe,
                                       log=log)
    start_key = None if resume else reuse_start_eval(recipe, trainer, blocks["validation"], precision, log)
    if warm is not None:
        copied = warm.finish(trainer.model)
        log(f"memory: {warm.written / 1e9:.1f} of {warm.size / 1e9:.1f} GB written ahead in {warm.seconds:.1f} s "
            "beside loading"
            + (f"; {copied / 1e6:.0f} MB of trainable weights copied out of the file they were mapped from"
               if copied else ""))
    with safe:  # Ctrl-C / SIGTERM: finish the step, save, stop
        result = trainer.train(resume_from_checkpoint=last_trainer_checkpoint(out) if resume else None)
    if safe.stop_signal is not None:
        raise TrainingStopped(f"stopped at step {trainer.state.global_step}; the checkpoint "
                              f"{last_trainer_checkpoint(out)} is saved: run the same command with --resume to "
                              "continue", safe.stop_signal)
    final_eval = final_evaluation(trainer)
    if distributed.is_main():
        store_start_eval(start_key, trainer.state.log_history)

    restore(trainer.model)
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "tb_writer") and hasattr(callback, "close"):
            callback.close()
    metrics = summarize(recipe, trainer.state.log_history, result.metrics, final_eval, stats, precision,
                        time.time() - started)
    if recipe.data.streaming:
        stream = blocks["train"]
        metrics["stream"] = {"documents": stream.documents, "blocks": stream.blocks, "epochs": stream.epoch,
                             "documents_read_by_this_run": stream.documents_read}
    if distributed.is_main():
        index_record = None
        if retriever is not None:
            index_record = {"retriever": retriever, "top_k": recipe.data.retrieval.top_k,
                            "passage_tokens": recipe.data.retrieval.context_tokens,
                            "sentences": recipe.data.retrieval.sentences}
        save_checkpoint(out, trainer.model, tokenizer, to_dict(recipe), metrics, trainer.state.log_history,
                        index_record)
        if not recipe.training.lora.enabled:
            distributed.check_full_weights(out, trainer.model)
        if not recipe.output.keep_training_state:
            SafeCheckpoints.remove_all(out / TRAINER_DIR)
        log(f"saved checkpoint to {out}: " + headline(metrics))
        if recipe.output.push_to:
            pushed = push_checkpoint(str(out), recipe.output.push_to, private=recipe.output.push_private, log=log)
            log(f"pushed {pushed['files']} files to {pushed['repo_id']}: commit {pushed['commit']}")
    distributed.wait_for_everyone()
    return metrics


def streamed_blocks(recipe: Recipe, loaded, tokenizer) -> tuple[dict, dict]:
    """The training stream (nothing read yet) and the packed validation blocks, with their stats."""
    from hftoolkit.data.stream_blocks import StreamedBlocks  # heavy: torch, once the recipe passed its checks

    prep, data = recipe.preprocess, recipe.data
    encode_row = None
    if data.format == "text":
        tokens = tokenize_documents(loaded.validation, tokenizer, data.text_column, prep.add_eos)
        validation = pack_dataset(tokens, prep.block_size, tokenizer.pad_token_id, packing=True)
        validation_stats = block_stats(len(loaded.validation), validation)
    else:  # qa/chat: one example per row, padded per batch as the map-style path does
        validation = encode_chat_dataset(loaded.validation, tokenizer, data, prep.block_size)
        validation_stats = chat_stats(validation)
        validation = validation.remove_columns("truncated")
        encode_row = row_encoder(tokenizer, data, prep.block_size)
    train = StreamedBlocks(loaded.train, tokenizer, prep.block_size, prep.add_eos, data.shuffle_buffer,
                           recipe.training.seed, distributed.rank(), distributed.world_size(), encode_row)
    training = recipe.training
    train.limit = planned_steps(recipe) * training.gradient_accumulation * training.batch_size // train.world
    source = loaded.train
    where = {"files": len(source.files)} if source.sql is None else {"database": describe_source(source.sql)}
    stats = {"train": {"streamed": True, **where, "held_out_documents": source.skip,
                       "shuffle_buffer_blocks": recipe.data.shuffle_buffer},
             "validation": validation_stats}
    return {"train": train, "validation": validation}, stats


def setup_model(recipe: Recipe, loaded, labels: list[str] | None, log):
    """(tokenizer, model), pretrained or from scratch, with LoRA adapters when asked."""
    head = head_config(recipe, labels)
    if recipe.model.from_scratch:
        column = recipe.data.text_column

        def texts():
            if isinstance(loaded.train, DocumentSource):
                return loaded.train.documents()  # one pass over the stream
            return (row[column] for row in loaded.train if isinstance(row[column], str))

        tokenizer, model = build_from_scratch(recipe, texts, loaded.content_hash, log, head)
    else:
        tokenizer, model = load_pretrained(recipe, log, head)
    if recipe.training.lora.enabled:
        model = add_lora(model, recipe)
        trainable, total = model.get_nb_trainable_parameters()
        log(f"LoRA: training {trainable / 1e6:.2f}M of {total / 1e6:.1f}M parameters")
    return tokenizer, model


def head_config(recipe: Recipe, labels: list[str] | None) -> dict:
    """Config fields for a classification head: label maps saved in config.json, problem type."""
    if recipe.model.task != "classification":
        return {}
    if recipe.model.problem_type == "regression":
        return {"num_labels": 1, "problem_type": "regression"}
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)}, "problem_type": recipe.model.problem_type}


def build_trainer(recipe: Recipe, model, tokenizer, blocks, out: Path, labels: list[str] | None = None,
                  answer_accuracy=None, safe_checkpoints=None, log=lambda message: None):
    import torch
    from transformers import EarlyStoppingCallback

    from hftoolkit.train.cpu_kernels import use_cpu_kernels  # heavy: transformers' Trainer, imported when work starts
    from hftoolkit.train.stopping import SafeCheckpoints  # heavy: transformers' Trainer, imported when work starts
    from hftoolkit.train.trainer import PerplexityTrainer  # heavy: transformers' Trainer, imported when work starts

    precision, why = resolve_precision(recipe.training.precision)
    log(f"precision: {precision} ({why})")
    if not torch.cuda.is_available():
        log(f"memory allocator: {describe()}")
        swapped = use_cpu_kernels(model, bf16=precision == "bf16")
        if swapped:
            log("CPU kernels: " + ", ".join(swapped))
    metrics = compute_metrics_for(recipe, labels)
    variable = recipe.model.task == "classification" or recipe.data.format != "text"
    streaming = recipe.data.streaming
    args = training_arguments(recipe.training, out, precision, variable_length=variable,
                              batch_metrics=metrics is not None, max_steps=planned_steps(recipe),
                              ignore_data_skip=streaming)  # a stream resumes from its saved position
    callbacks = [tensorboard_callback(out / "logs")] if is_main() else []  # one event file, from rank 0
    if streaming:
        from hftoolkit.train.stream_state import StreamPositions  # heavy: transformers' callbacks

        callbacks.append(StreamPositions(blocks["train"]))  # before SafeCheckpoints marks the folder complete
    callbacks.append(safe_checkpoints or SafeCheckpoints())  # complete markers, rotation, signals
    if recipe.training.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.training.early_stopping_patience))
    weights = None
    if recipe.training.class_weights and recipe.model.problem_type == "single_label_classification":
        weights = inverse_frequency_weights(blocks["train"]["labels"], len(labels))
    trainer = PerplexityTrainer(model=model, args=args, train_dataset=blocks["train"],
                                eval_dataset=blocks["validation"], data_collator=collator_for(recipe, tokenizer),
                                processing_class=tokenizer, callbacks=callbacks, compute_metrics=metrics,
                                class_weights=weights, log_perplexity=recipe.model.task != "classification",
                                # answer-only labels: the output layer only where there is a label; text blocks
                                # are labelled almost everywhere, so they keep the model's own loss
                                labelled_positions_loss=(recipe.model.task == "causal_lm"
                                                         and recipe.data.format != "text"),
                                token_mean_eval=recipe.model.task == "causal_lm",
                                loss_is_batch_mean=recipe.model.task != "causal_lm",
                                answer_accuracy=answer_accuracy)
    return trainer, precision


def final_evaluation(trainer) -> dict:
    """Metrics of the finished weights. The Trainer evaluates after its last step already; that evaluation
    is reused unless the best checkpoint was loaded since. Evaluating again ran the validation set twice
    and put two points for the last step in the log."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if evals and evals[-1].get("step") == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return {k: v for k, v in evals[-1].items() if k.startswith("eval_") or k == "epoch"}
    return trainer.evaluate()


def summarize(recipe: Recipe, history: list[dict], train_metrics: dict, final_eval: dict, stats: dict,
              precision: str, wall: float) -> dict:
    evals = [h for h in history if "eval_loss" in h]
    tokens = int(train_metrics.get("num_input_tokens_seen", 0) or
                 max((h.get("num_input_tokens_seen", 0) for h in history), default=0))
    runtime = train_metrics.get("train_runtime", wall)
    start = evals[0] if evals and evals[0].get("step") == 0 else {}  # only with training.eval_on_start
    summary = {"train_loss": train_metrics.get("train_loss"), "eval_loss_start": start.get("eval_loss")}
    if recipe.model.task == "classification":
        summary.update({f"{k}_start": v for k, v in start.items()
                        if k in ("eval_accuracy", "eval_f1_macro", "eval_mse", "eval_mae")})
        summary.update({k: v for k, v in final_eval.items() if k.startswith("eval_") and "runtime" not in k
                        and "per_second" not in k})
    else:
        summary.update({"eval_perplexity_start": perplexity(start["eval_loss"]) if start else None,
                        "eval_loss": final_eval["eval_loss"], "eval_perplexity": perplexity(final_eval["eval_loss"])})
        if "eval_answer_accuracy" in final_eval:
            summary.update({"eval_answer_accuracy_start": start.get("eval_answer_accuracy"),
                            "eval_answer_accuracy": final_eval["eval_answer_accuracy"]})
    summary.update({
        "train_steps": max((h.get("step", 0) for h in history), default=0),
        "tokens_seen": tokens,
        "tokens_per_second": tokens / runtime if runtime else 0.0,
        "train_runtime_seconds": runtime,
        "wall_time_seconds": round(wall, 2),
        "precision": precision,
        "processes": distributed.world_size(),
        "preprocessing": stats,
    })
    return summary
