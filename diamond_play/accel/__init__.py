"""Acceleration: execution modes and what they do to the paper modules at inference (bf16 weights, memory layout,
fused inference rewrites, AOTInductor / torch.compile callables, whole-frame CUDA graphs). The modules stay plain
`torch.nn`; everything here wraps them."""
