"""Chat templates for base models that ship none, so a QA or chat recipe can fine-tune them.

The template is set on the tokenizer before preprocessing and saved with the checkpoint
(`chat_template.jinja`), so `generate --chat`, `serve` and training render the same prompt. A family whose
instruction-tuned models have a known turn format gets that format (Gemma: `<start_of_turn>` / `<end_of_turn>`,
with the system message at the head of the first user turn, as Gemma has no system role); any other model gets
`DEFAULT`, plain "### Question:" / "### Answer:" sections whose answers end with the tokenizer's EOS token.
"""

from __future__ import annotations

GEMMA = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] ~ '\n\n' %}"
    "{% else %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else 'user' }}\n"
    "{{ (ns.system if message['role'] == 'user' else '') ~ message['content'] }}<end_of_turn>\n"
    "{% if message['role'] == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

DEFAULT = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Question:\n{{ message['content'] }}\n\n"
    "{% else %}### Answer:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Answer:\n{% endif %}"
)

FAMILIES = {"gemma": GEMMA}  # model_type prefix -> its turn format


def template_for(model_type: str) -> tuple[str, str]:
    """(template, which) for a model of `model_type` that has no chat template."""
    for prefix, template in FAMILIES.items():
        if model_type.startswith(prefix):
            return template, f"the {prefix.capitalize()} turn format"
    return DEFAULT, "hftoolkit's default (### Question: / ### Answer:)"


def ensure_chat_template(tokenizer, model_type: str, log=print) -> None:
    """Give `tokenizer` a chat template when it has none (a base model in a QA or chat recipe)."""
    if tokenizer.chat_template:
        return
    tokenizer.chat_template, which = template_for(model_type)
    log(f"chat template: the model has none; using {which}, saved with the checkpoint")
