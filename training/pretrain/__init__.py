"""Full-scale CLAP pretraining: torchrun on one GPU, several GPUs or several nodes.

`animalclap-train pretrain --config paper` (see training/configs/). The single-process
`training.train` stays the quick CPU path; this package adds DDP with features
gathered across ranks, bf16, gradient checkpointing, resumable atomic checkpoints
and TensorBoard/JSONL logs.
"""
