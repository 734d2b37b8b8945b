"""Pretraining the micro Wan on the micro world: VAE, then latents cached once, then DiT + UMT5.

``effivmt pretrain --out DIR`` (:func:`effivmt.pretrain.run.pretrain_micro`) reproduces the shipped
weights from scratch; re-running into the same folder resumes where it stopped.
"""
