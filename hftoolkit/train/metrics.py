"""Small metric helpers shared by training and evaluation."""

import math


def perplexity(loss: float) -> float:
    """exp(cross-entropy), capped so a diverged loss prints as a huge number, not an overflow."""
    return math.exp(min(loss, 50.0))


def headline(metrics: dict) -> str:
    """One line with the numbers that judge this kind of run, start -> end."""
    parts = []
    for key in ("eval_perplexity", "eval_answer_accuracy", "eval_accuracy", "eval_f1_macro", "eval_mse", "eval_loss"):
        if key in metrics:
            start = metrics.get(f"{key}_start")
            parts.append(f"{key[5:]} {start:.4f} -> {metrics[key]:.4f}" if start is not None
                         else f"{key[5:]} {metrics[key]:.4f}")
    return ", ".join(parts) + f", {metrics['tokens_per_second']:.0f} tokens/s, {metrics['wall_time_seconds']:.1f}s"
