"""Step 2 for qa/chat data: render with the model's chat template and mask everything but answers.

Labels are -100 on system/user turns and on the generation prompt; the
assistant's tokens, its end-of-turn token included, are learned. The spans come
from rendering growing prefixes of the conversation, so any template that
renders prefixes consistently works.
"""

from __future__ import annotations

from hftoolkit.data.fingerprint import step_fingerprint
from hftoolkit.data.mapping import map_processes
from hftoolkit.data.pack import IGNORE_INDEX
from hftoolkit.errors import UserError
from hftoolkit.recipe.schema import DataSection
from hftoolkit.retrieval.context import question_with_context


def to_messages(row: dict, data: DataSection, with_answer: bool = True) -> list[dict]:
    """The conversation for one row; retrieved passages (a `passages` column) go before the question."""
    if data.format == "chat":
        return list(row[data.messages_column])
    messages = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    question = question_with_context(str(row[data.question_column]).strip(), row.get("passages") or "")
    messages.append({"role": "user", "content": question})
    if with_answer:
        messages.append({"role": "assistant", "content": str(row[data.answer_column]).strip()})
    return messages


def encode_conversation(messages: list[dict], tokenizer, max_length: int) -> dict:
    """input_ids/labels for one conversation; only assistant turns carry labels."""
    input_ids: list[int] = []
    labels: list[int] = []
    for turn in range(len(messages)):
        if messages[turn]["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:turn], generation_prompt=True)
        full = _render(tokenizer, messages[:turn + 1], generation_prompt=False)
        if len(prompt) < len(input_ids) or prompt[:len(input_ids)] != input_ids:
            raise UserError("the chat template does not render conversations prefix-consistently; "
                            "use data.format: text or a model with a standard template")
        new_prompt = prompt[len(input_ids):]
        answer = full[len(prompt):]
        input_ids += new_prompt + answer
        labels += [IGNORE_INDEX] * len(new_prompt) + answer
    truncated = max(0, len(input_ids) - max_length)
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels,
            "truncated": truncated}


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def row_encoder(tokenizer, data: DataSection, max_length: int):
    """One row (qa columns, or a messages list or its JSON text) to one example, for a streamed split."""
    import json

    def encode(row: dict) -> dict:
        messages = row.get(data.messages_column)
        if data.format == "chat" and isinstance(messages, str):
            row = {**row, data.messages_column: json.loads(messages)}
        return encode_conversation(to_messages(row, data), tokenizer, max_length)

    return encode


def encode_chat_dataset(dataset, tokenizer, data: DataSection, max_length: int, num_proc: int = 1):
    if not tokenizer.chat_template:
        raise UserError(f"data.format: {data.format} needs a chat template, and this model's tokenizer "
                        "has none; use data.format: text or a chat model such as smollm2-135m-instruct")

    def encode(row):
        return encode_conversation(to_messages(row, data), tokenizer, max_length)

    fingerprint = step_fingerprint(dataset, tokenizer, "encode_chat", data=data, max_length=max_length)
    encoded = dataset.map(encode, remove_columns=dataset.column_names, num_proc=map_processes(num_proc),
                          desc="applying chat template", new_fingerprint=fingerprint)
    empty = sum(1 for labels in encoded["labels"] if all(x == IGNORE_INDEX for x in labels))
    if empty:
        raise UserError(f"{empty} example(s) have no answer tokens left after truncation to "
                        f"preprocess.block_size={max_length}; raise preprocess.block_size or shorten prompts")
    return encoded


def chat_stats(encoded) -> dict:
    lengths = [len(ids) for ids in encoded["input_ids"]]
    answers = sum(sum(1 for x in labels if x != IGNORE_INDEX) for labels in encoded["labels"])
    return {"examples": len(lengths), "tokens": sum(lengths), "answer_tokens": answers,
            "max_length": max(lengths, default=0), "tokens_truncated": sum(encoded["truncated"])}


def show_loss_mask(example: dict, tokenizer) -> str:
    """The example decoded, with the learned (in-loss) spans wrapped in [[ ]]."""
    pieces, current, learned = [], [], None
    for token, label in zip(example["input_ids"], example["labels"]):
        is_learned = label != IGNORE_INDEX
        if learned is not None and is_learned != learned:
            pieces.append((learned, current))
            current = []
        current.append(token)
        learned = is_learned
    if current:
        pieces.append((learned, current))
    return "".join(f"[[{tokenizer.decode(ids)}]]" if flag else tokenizer.decode(ids) for flag, ids in pieces)
