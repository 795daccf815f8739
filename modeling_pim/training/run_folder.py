"""
The files a training run leaves in its `output_dir` (`train_pim.py`), so that the model there is never published
with another run's results: finding and removing a previous run's files, and finding results older than the model
they sit beside (`push_to_hub.py`).
"""

import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME


DATA_REPORT_FILENAME = "data_report.json"
# The run's first test image, copied for the model page's widget (`hub/widget.py`): `test_example.<ext>`.
TEST_EXAMPLE_STEM = "test_example"
TEST_PREDICTIONS_FILENAME = "test_predictions.csv"
# `save_model`: the model, its image processor and the training arguments (shards: model-00001-of-00002.safetensors).
MODEL_PATTERNS = (
    "config.json",
    SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    "model-*-of-*.safetensors",
    "preprocessor_config.json",
    "training_args.bin",
)
# `save_metrics("train")`, `save_state`, and the recipe the model was trained with.
TRAINING_PATTERNS = ("train_results.json", "trainer_state.json", "training_recipe.json")
# What evaluating the model writes: `save_metrics` of the evaluation and test splits (and `all_results.json`, which
# `save_metrics` merges into rather than replaces), the predictions of an unlabeled test split, the test example.
EVALUATION_PATTERNS = (
    "eval_results.json",
    "test_results.json",
    "all_results.json",
    TEST_PREDICTIONS_FILENAME,
    f"{TEST_EXAMPLE_STEM}.*",
)
# Results that describe the model beside them only if written after it.
RESULT_PATTERNS = ("eval_results.json", "test_results.json", f"{TEST_EXAMPLE_STEM}.*")
# A model saved this many seconds after its results still counts as theirs (copying a folder may write the model last).
RESULT_AGE_TOLERANCE_SECONDS = 60.0


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({path for pattern in patterns for path in folder.glob(pattern)})


def evaluation_files(output_dir: str | Path) -> list[Path]:
    """The files of `EVALUATION_PATTERNS` in `output_dir`."""
    return _matching(Path(output_dir), EVALUATION_PATTERNS)


def previous_run_files(output_dir: str | Path) -> list[Path]:
    """
    The files of a training run's model, training and evaluation in `output_dir` (`MODEL_PATTERNS`,
    `TRAINING_PATTERNS`, `EVALUATION_PATTERNS`), not its checkpoints nor its data report (which every run rewrites
    before training).
    """
    return _matching(Path(output_dir), MODEL_PATTERNS + TRAINING_PATTERNS + EVALUATION_PATTERNS)


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-<step>` folders `Trainer` saved in `output_dir`."""
    return sorted(path for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir())


def remove_paths(paths: list[Path]) -> None:
    """Removes each file, and each folder with what it holds."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def results_older_than_model(model_dir: str | Path) -> list[Path]:
    """
    The results in `model_dir` (`RESULT_PATTERNS`: evaluation and test metrics, the test example) that were written
    more than `RESULT_AGE_TOLERANCE_SECONDS` before its model weights (`model.safetensors`, else the index of its
    shards): results of a previous model, e.g. left by an earlier run in the same `output_dir`. Empty without weights.
    """
    model_dir = Path(model_dir)
    weights = [path for path in (model_dir / SAFE_WEIGHTS_NAME, model_dir / SAFE_WEIGHTS_INDEX_NAME) if path.is_file()]
    if not weights:
        return []
    saved = weights[0].stat().st_mtime
    return [
        path
        for path in _matching(model_dir, RESULT_PATTERNS)
        if path.is_file() and path.stat().st_mtime < saved - RESULT_AGE_TOLERANCE_SECONDS
    ]


__all__ = [
    "DATA_REPORT_FILENAME",
    "EVALUATION_PATTERNS",
    "MODEL_PATTERNS",
    "RESULT_AGE_TOLERANCE_SECONDS",
    "RESULT_PATTERNS",
    "TEST_EXAMPLE_STEM",
    "TEST_PREDICTIONS_FILENAME",
    "TRAINING_PATTERNS",
    "checkpoint_folders",
    "evaluation_files",
    "previous_run_files",
    "remove_paths",
    "results_older_than_model",
]
