"""The model-shape matmul ceiling counts exactly the FLOPs that MFU charges a step with."""

from transformers import AutoConfig, GPT2Config

from benchmarks.machine import flops_per_token
from benchmarks.model_matmuls import step_matmuls, weight_shapes
from hftoolkit.models.registry import pull


def _linear_parameters(config) -> int:
    return sum(inner * outer * count for (inner, outer), count in weight_shapes(config).items())


def test_smollm2_shapes_are_every_weight_matrix_and_the_tied_output_layer():
    config = AutoConfig.from_pretrained(str(pull("smollm2-135m-instruct", log=lambda m: None)))
    shapes = weight_shapes(config)
    assert shapes[(576, 576)] == 2 * 30  # q and o projections
    assert shapes[(576, 192)] == 2 * 30  # k and v: 3 key/value heads of 64
    assert shapes[(576, 1536)] == 2 * 30 and shapes[(1536, 576)] == 30  # gate, up; down
    assert shapes[(576, 49152)] == 1  # the output layer, tied to the embedding, counted once
    assert sum(shapes.values()) == 7 * 30 + 1


def test_step_flops_equal_what_mfu_counts():
    # GPT-2 stores its weights transposed (Conv1D): both layouts must count alike
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64)
    shapes = weight_shapes(config)
    assert shapes[(64, 192)] == 2 and shapes[(64, 256)] == 2 and shapes[(256, 64)] == 2  # qkv; MLP in, out
    assert shapes[(64, 500)] == 1
    batch, sequence = 2, 16
    step = step_matmuls(config, batch, sequence, repeats=1)
    expected = batch * sequence * flops_per_token(_linear_parameters(config), 2, 64, sequence)
    assert abs(step["gflop"] * 1e9 - expected) < 1e-6 * expected
    assert step["gflops"] > 0
