"""The decode-attention benchmark times hftoolkit's row attention against sdpa on the same numbers, which agree."""

from benchmarks.decode_attention import SMOLLM2_ATTENTION, measure


def test_each_pass_times_both_and_their_outputs_agree_to_bf16_rounding():
    results = measure(keys=40, pass_rows=(1, 4))
    assert results["keys"] == 40 and results["heads"] == SMOLLM2_ATTENTION["heads"]
    assert set(results["passes"]) == {1, 4}
    for rows, row in results["passes"].items():
        assert row["sdpa_whole_pass_us"] > 0 and row["row_attention_us"] > 0
        assert abs(row["ratio"] - row["row_attention_us"] / row["sdpa_whole_pass_us"]) < 0.02  # of unrounded times
        assert row["max_difference"] < 0.02, rows  # the same attention, rounded by pass length at most
    assert results["passes"][1]["max_difference"] == 0  # one row: the very call plain decoding makes
