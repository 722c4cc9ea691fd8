"""Training and evaluation of one run (architecture x token budget x seed).

- model:     the HF Llama model of a config.json, checkpoints, the MFU estimate.
- hf_compat: lets transformers 5 load shapes whose head_dim is decoupled from d_model.
- loop:      the training loop, in steps (set-up, restore, train step, save, final metrics).
- state:     the resume state a killed run continues from.
- launch:    running a job in-process or through torchrun (`python -m archscale.training.launch`).
- evaluate:  held-out loss, bits per byte and lm-eval accuracy of a trained checkpoint.
"""
