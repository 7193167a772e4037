"""Search MNv4 students for a latency target: the paper's two-stage TuNAS over UIB (arXiv
2404.10518 §6.1), trained on the distillation data (``python -m nas``)."""
