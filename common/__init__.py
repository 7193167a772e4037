"""Pieces every package shares: LR schedule, normalisation constants, weights I/O, images,
digits and image-folder listing. ``common`` imports none of distill/data/teachers/students
(tests/test_imports.py keeps the order nas -> distill -> data -> teachers -> students -> common)."""
