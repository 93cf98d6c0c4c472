"""The decode-linears benchmark times one row through every layer and counts the bytes each precision reads."""

from benchmarks.decode_linears import SMOLLM2_LAYER, measure
from hftoolkit.train.precision import cpu_has_bf16_instructions


def test_one_layer_counts_its_weights_and_reads_them_at_a_positive_rate():
    results = measure(layers=1)
    assert results["weights"] == sum(i * o for i, o in SMOLLM2_LAYER)  # 7 matrices of one SmolLM2 layer
    expected = {"fp32, nn.Linear"}
    if cpu_has_bf16_instructions():
        expected |= {"bf16, nn.Linear", "bf16, torch.mv", "bf16, hftoolkit's PackedLinear",
                     "bf16, PackedLinear, siblings joined"}
    assert set(results["kinds"]) == expected
    fp32 = results["kinds"]["fp32, nn.Linear"]
    assert fp32["ms_per_token"] > 0 and results["read_gb_s"] > 0
    # the bytes read are the fp32 weights': rate x time = 4 bytes per weight (to the rounding of both)
    read = fp32["weights_read_gb_s"] * 1e9 * fp32["ms_per_token"] / 1e3
    assert abs(read - 4 * results["weights"]) < 0.05 * 4 * results["weights"]
