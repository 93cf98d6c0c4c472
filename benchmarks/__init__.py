"""hftoolkit's benchmarks: each compares hftoolkit with a baseline in one run; `python -m benchmarks` runs all."""
