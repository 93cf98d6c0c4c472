"""The recipe schema: every knob with its type, default and help in one place.

Precedence is dataclass default < recipe YAML < command-line `key=value`; the
merging and type checks live in `recipe.load`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union


def knob(default: Any = None, help: str = "", **kwargs) -> Any:
    """A dataclass field that carries its help text (used by `recipes show` and errors)."""
    if "default_factory" in kwargs:
        return field(metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help})


@dataclass
class FromScratch:
    architecture: str = knob("gpt2", "transformers model_type to build, e.g. gpt2, llama, bert")
    config: dict[str, Any] = knob(help="config kwargs for that architecture (layers, width, ...)",
                                  default_factory=dict)
    vocab_size: int = knob(4096, "size of the BPE/WordPiece tokenizer trained on the corpus")


@dataclass
class Lora:
    enabled: bool = knob(False, "train low-rank adapters instead of all weights")
    r: int = knob(16, "adapter rank: higher learns more, costs more memory")
    alpha: int = knob(32, "adapter scaling numerator (effective scale alpha/r)")
    dropout: float = knob(0.05, "dropout on the adapter input")
    target_modules: list[str] = knob(help="module names to adapt; 'all-linear' for every linear layer",
                                     default_factory=lambda: ["all-linear"])
    save_merged: bool = knob(True, "also write the merged full model as the checkpoint")


@dataclass
class ModelSection:
    name: Optional[str] = knob(None, "short name (hftoolkit models list), hub id or local folder")
    from_scratch: Optional[FromScratch] = knob(None, "build a new model and tokenizer instead of `name`")
    task: Literal["causal_lm", "masked_lm", "classification"] = knob(
        "causal_lm", "which head to train")
    trust_remote_code: bool = knob(False, "run Python code shipped with a hub model (only for a repository you "
                                          "trust); off, such models are refused")
    problem_type: Literal["single_label_classification", "multi_label_classification", "regression"] = knob(
        "single_label_classification", "classification only: one label, a list of labels, or a number per text")


@dataclass
class Retrieval:
    index: str = knob("", "corpus index folder (hftoolkit index build); recorded in the checkpoint, which then "
                          "answers from it by default")
    corpus: Optional[str] = knob(None, "text files to (re)build the index from before training; unchanged "
                                       "files are not re-embedded. Unset: the index must exist")
    embedder: str = knob("minilm-l6", "sentence-embedding model for a new index")
    chunk_tokens: int = knob(128, "most embedder tokens per chunk when building")
    top_k: int = knob(3, "passages per question, in training and later at generation")
    context_tokens: int = knob(384, "most tokens of passages per prompt; more context costs training time")
    sentences: int = knob(0, "> 0: put only this many sentences of the top_k chunks, the most similar to the "
                             "question, into each prompt (training and generation); 0: whole chunks")
    distractor_percent: float = knob(20.0, "percent of training questions shown only passages that lack the "
                                           "answer (RAFT), so the model also learns the facts themselves")
    counterfactual_percent: float = knob(0.0, "percent of training pairs also taught as a copy with the answer's "
                                               "value changed alike in answer and passages (another number, or "
                                               "another pair's key-fact term), so the model copies from the "
                                               "passages instead of recalling; each copy is one more example")


@dataclass
class SqlSource:
    uri: str = knob("", "sqlite:///path.db or postgresql://user@host:port/db; a password may come from the URI, "
                        "PGPASSWORD or ~/.pgpass and is never saved or printed")
    table: Optional[str] = knob(None, "read every row of this table (ordered by its id column when it has one)")
    query: Optional[str] = knob(None, "or read the rows this SELECT returns")


@dataclass
class DataSection:
    train: Union[str, SqlSource] = knob("", "file, glob, folder, bundled:// path, hub dataset id, or a database "
                                            "table/query as {uri: ..., table: ...} or {uri: ..., query: ...}")
    validation: Optional[Union[str, SqlSource]] = knob(None, "validation data (same forms as train); when unset, "
                                                             "`validation_percent` is split off")
    validation_percent: float = knob(10.0, "percent of training documents held out (deterministic)")
    format: Literal["text", "qa", "chat", "preference", "rated"] = knob(
        "text", "text: plain corpus; qa: question/answer columns; chat: a messages column; preference: prompt, "
                "chosen and rejected answer (training.method: dpo or kto); rated: prompt, completion and a true/false "
                "label (training.method: kto)")
    text_column: str = knob("text", "column holding the documents (format: text)")
    text_documents: Literal["paragraph", "file"] = knob(
        "paragraph", ".txt files: a blank line ends a document (paragraph), or each file is one document whose "
                     "paragraphs train as each other's context (file: better for connected text, one EOS per file)")
    label_column: str = knob("label", "classification: label name, list of names (multi-label) or number; "
                                      "rated: true for a good answer, false for a bad one")
    question_column: str = knob("question", "column holding questions (format: qa)")
    answer_column: str = knob("answer", "column holding answers (format: qa)")
    messages_column: str = knob("messages", "column holding chat messages (format: chat)")
    prompt_column: str = knob("prompt", "column holding the prompt (format: preference or rated); it may include "
                                        "the retrieved passages the answer was given, as `data export-log` writes it")
    chosen_column: str = knob("chosen", "column holding the preferred answer (format: preference)")
    rejected_column: str = knob("rejected", "column holding the answer not to give (format: preference)")
    completion_column: str = knob("completion", "column holding a rated answer (format: rated)")
    system_column: str = knob("system", "preference/rated: an optional column with each row's system prompt, which "
                                        "replaces data.system_prompt for that row")
    system_prompt: Optional[str] = knob(None, "system message added to every qa example (preference/rated: when "
                                              "unset, the one the base checkpoint was trained with)")
    extra_text: Optional[Union[str, SqlSource]] = knob(None, "qa/chat only: a plain-text corpus trained on alongside the examples "
                                           "(packed, full loss), so the model learns the documents too")
    max_train_samples: Optional[int] = knob(None, "debug: keep only the first N training documents")
    streaming: bool = knob(False, "text, qa or chat: read and tokenize the training data on the fly (local files, "
                                  ".gz/.zst too, or a database) instead of preparing it all first; for corpora too "
                                  "large for memory or disk twice. Needs training.max_steps or max_tokens; resumes "
                                  "where it stopped")
    shuffle_buffer: int = knob(1000, "streaming: blocks (qa/chat: examples) held and drawn at random, so "
                                     "neighbouring documents do not train together (0: corpus order)")
    validation_documents: int = knob(200, "streaming without data.validation: the first N documents are held out "
                                          "for validation (training skips them)")
    retrieval: Optional[Retrieval] = knob(None, "qa only: put retrieved corpus passages into each question "
                                                "(with some distractor-only examples) so the model learns to "
                                                "answer from context")


@dataclass
class PreprocessSection:
    block_size: int = knob(256, "tokens per training block (packing) or max example length (qa/chat)")
    packing: bool = knob(True, "concatenate documents into full blocks; the remainder is padded, never dropped")
    add_eos: bool = knob(True, "append EOS to each document so the model learns where text ends")
    num_proc: int = knob(0, "tokenizer worker processes; 0: one per CPU core when the training data is 20 MB "
                            "or more (1.9x faster at 100 MB on 2 cores), else 1 (starting workers costs more)")
    mlm_probability: float = knob(0.15, "masked_lm: share of tokens masked for prediction")
    whole_word_mask: bool = knob(False, "masked_lm: mask every piece of a word together (harder, often better)")


@dataclass
class Preference:
    beta: float = knob(0.1, "dpo/kto: how far the model may move from the reference (higher: less)")
    loss_type: str = knob("sigmoid", "dpo: TRL's loss, e.g. sigmoid (DPO), ipo, hinge, robust")
    desirable_weight: float = knob(1.0, "kto: weight of the answers labelled true")
    undesirable_weight: float = knob(1.0, "kto: weight of the answers labelled false")


@dataclass
class TrainingSection:
    method: Literal["sft", "dpo", "kto"] = knob(
        "sft", "sft: learn the answers (qa/chat/text data); dpo: prefer chosen over rejected answers (format: "
               "preference); kto: learn from answers rated good or bad (format: rated, or preference pairs split)")
    preference: Preference = knob(help="dpo/kto knobs (TRL's DPOTrainer and KTOTrainer)",
                                  default_factory=Preference)
    epochs: float = knob(3.0, "passes over the training blocks")
    max_steps: int = knob(-1, "stop after this many optimizer steps (-1: use epochs)")
    max_tokens: Optional[int] = knob(None, "or stop after this many training tokens (blocks x block_size): sets "
                                           "max_steps = tokens / (batch_size x gradient_accumulation x block_size), "
                                           "rounded up")
    batch_size: int = knob(8, "blocks per step, over all processes: N processes take batch_size/N each")
    eval_batch_size: int = knob(16, "blocks per eval step")
    gradient_accumulation: int = knob(1, "steps per optimizer update (effective batch = batch_size x this)")
    learning_rate: float = knob(5e-4, "peak learning rate")
    weight_decay: float = knob(0.01, "AdamW weight decay")
    warmup_ratio: float = knob(0.05, "fraction of steps spent warming the learning rate up")
    lr_scheduler: str = knob("cosine", "transformers scheduler name: linear, cosine, constant, ...")
    max_grad_norm: float = knob(1.0, "gradient clipping")
    eval_steps: int = knob(50, "evaluate every N optimizer steps")
    logging_steps: int = knob(10, "log the training loss every N steps")
    save_steps: int = knob(100, "write a resumable checkpoint every N steps")
    early_stopping_patience: Optional[int] = knob(None, "stop after N evals without improving best_metric; the "
                                                        "best checkpoint is loaded at the end")
    answer_accuracy: bool = knob(False, "qa only: at every eval, answer the validation questions greedily and "
                                        "log eval_answer_accuracy (costs a generation pass per eval)")
    best_metric: Literal["eval_loss", "answer_accuracy"] = knob(
        "eval_loss", "what early stopping and best-checkpoint selection watch (answer_accuracy needs "
                     "training.answer_accuracy: true)")
    eval_on_start: bool = knob(True, "evaluate before the first step, as the baseline the run is judged against")
    reuse_start_eval: bool = knob(True, "reuse the evaluation on start of an earlier run with the same model "
                                        "files, validation blocks, precision and eval batch (causal LMs)")
    precision: Literal["auto", "bf16", "fp32"] = knob(
        "auto", "auto: bf16 autocast on a GPU with bf16 or a CPU whose bf16 matmul is measured faster than "
                "fp32, else fp32")
    seed: int = knob(42, "seed for init, shuffling and dropout")
    gradient_checkpointing: bool = knob(False, "trade compute for activation memory")
    class_weights: bool = knob(False, "single-label classification: weight the loss by inverse class frequency")
    lora: Lora = knob(help="low-rank adapter options", default_factory=Lora)


@dataclass
class OutputSection:
    dir: str = knob("runs/model", "checkpoint folder; an existing finished run is kept unless --overwrite")
    license: Optional[str] = knob(None, "license id for the model card's metadata, e.g. apache-2.0 (the base "
                                        "model's license usually applies)")
    push_to: Optional[str] = knob(None, "OWNER/NAME: push the finished checkpoint to this hub repository "
                                        "(endpoint: HF_ENDPOINT; token: HF_TOKEN or `hf auth login`)")
    push_private: bool = knob(False, "create the push_to repository private")
    num_beams: int = knob(1, "beam search width written into the checkpoint's generation_config.json, so generate, "
                             "eval and transformers' own generate() search that many beams by default (1: greedy; "
                             "streamed chat answers are always greedy)")
    keep_training_state: bool = knob(False, "keep checkpoints/ (optimizer state for --resume, ~3x the model's size) "
                                            "once the run has finished; false (a finished run needs none of it) skips "
                                            "the final one and removes the rest")


@dataclass
class Recipe:
    description: str = knob("", "one line shown by `hftoolkit recipes list`")
    model: ModelSection = knob(help="what to train", default_factory=ModelSection)
    data: DataSection = knob(help="where the text comes from", default_factory=DataSection)
    preprocess: PreprocessSection = knob(help="tokenization and packing", default_factory=PreprocessSection)
    training: TrainingSection = knob(help="the Trainer loop", default_factory=TrainingSection)
    output: OutputSection = knob(help="where the checkpoint goes", default_factory=OutputSection)
