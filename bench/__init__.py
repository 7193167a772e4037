"""Benchmarks (``make bench``): speed and size goals measured as ratios against named baselines."""
