"""Small metric helpers shared by training and evaluation."""

import math


def perplexity(loss: float) -> float:
    """exp(cross-entropy), capped so a diverged loss prints as a huge number, not an overflow."""
    return math.exp(min(loss, 50.0))
