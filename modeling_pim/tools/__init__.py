"""
Command-line tools: `pim-infer`, `pim-heatmap`, `pim-convert`. Each command is a light `pim_<tool>.py` (arguments,
entry point; `--help` imports nothing heavy) running the work of its `<tool>.py` module.
"""
