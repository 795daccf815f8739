"""Data: the official fine-grained archives and class folders, the synthetic demo set, training/eval transforms."""
