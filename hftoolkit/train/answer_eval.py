"""Answer accuracy as a training metric: greedy answers to the validation questions at every eval.

Eval loss says how likely the reference answers are; users care whether the
model says the right thing. This generates like `hftoolkit generate` would (same
chat template, system prompt and retrieved passages) and scores with the same
key-fact rule as `hftoolkit eval`, so `eval_answer_accuracy` can drive early
stopping and best-checkpoint selection.
"""

from __future__ import annotations

import copy

from hftoolkit.data.chat_format import to_messages
from hftoolkit.evaluation.qa_accuracy import score_answers
from hftoolkit.generate.engine import GenerationSettings, Generator


class AnswerAccuracy:
    def __init__(self, rows: list[dict], recipe, tokenizer, max_new_tokens: int = 48):
        self.tokenizer = copy.deepcopy(tokenizer)  # generation pads on the left; training keeps its own
        data = recipe.data
        self.rows = [{"question": str(r[data.question_column]), "answer": str(r[data.answer_column]),
                      "key_facts": r.get("key_facts"), "group": r.get("group")} for r in rows]
        self.prompts = [self.tokenizer.apply_chat_template(to_messages(r, data, with_answer=False), tokenize=False,
                                                           add_generation_prompt=True) for r in rows]
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens, greedy=True)
        self.batch_size = recipe.training.eval_batch_size

    def __call__(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            generator = Generator(model, self.tokenizer, "(training)")
            completions = generator.generate(self.prompts, self.settings, self.batch_size, log=lambda m: None)
        finally:
            model.train(was_training)
        return score_answers(self.rows, completions)["accuracy"]
