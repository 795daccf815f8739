"""Command-line tools: `pim-infer`, `pim-heatmap`, `pim-convert`."""
