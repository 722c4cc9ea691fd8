"""Training and evaluation of one run (architecture x token budget x seed).

- model:       the HF Llama model of a config.json, checkpoints, the MFU estimate.
- job:         a run as data (TrainJob), its fingerprint, its result settings and its errors.
- schedule:    the learning-rate rules, the run's steps and batches (Schedule), the data order.
- distributed: the device and this process's place in the process group (Dist).
- optimizer:   AdamW in parameter groups.
- train_log:   train_log.csv.
- loop:        the training loop, in steps (set-up, restore, train step, save, final metrics),
               and SIGTERM handling.
- state:       the resume state a killed run continues from (sharded_state: its fsdp form).
- launch:      running a job in-process or through torchrun (`python -m archscale.training.launch`).
- evaluate:    held-out loss, bits per byte and lm-eval accuracy of a trained checkpoint.
"""
