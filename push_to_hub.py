"""
Uploads a trained PIM model to the Hugging Face Hub with a model card:

    python push_to_hub.py --model_dir OUTPUT_DIR --repo_id USER/NAME [--private] [--commit_message ...]
    python push_to_hub.py --model_dir OUTPUT_DIR --repo_id USER/NAME --dry_run --local_dir DIR

The model and its image processor are loaded from `--model_dir` and saved again into a staging folder, so that the
upload always holds `model.safetensors`, `config.json` (with `auto_map`), `preprocessor_config.json`, the model's
code (`configuration_pim.py`, `modeling_pim.py`, `image_processing_pim.py`) and a `README.md` model card
([`modeling_pim.hub.model_card.build_model_card`]), plus the training run's `eval_results.json` / `test_results.json`
when present. `--dry_run` writes exactly that folder to `--local_dir` and uploads nothing (it works offline).

The Hub token comes from the usual places: the `HF_TOKEN` environment variable or `hf auth login`.
"""

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import HfApi, get_token, is_offline_mode
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from modeling_pim import PimForImageClassification, PimImageProcessor
from modeling_pim.hub.model_card import METRICS_FILES, build_model_card, read_training_outputs
from modeling_pim.utils.cli import UserInputError, add_debug_argument, run_command


logger = logging.get_logger(__name__)


class PushError(UserInputError):
    """A problem the user can fix (a path, an id, a login): reported without a traceback."""


def stage_model(model_dir: Path, repo_id: str, staging_dir: Path, license_id: str | None = None) -> list[str]:
    """Writes everything to upload into `staging_dir` and returns the file names, sorted."""
    if not (model_dir / "config.json").is_file():
        raise PushError(
            f"--model_dir {str(model_dir)!r} has no config.json: give the output_dir of train_pim.py or a folder "
            "written by `model.save_pretrained`."
        )
    try:
        model = PimForImageClassification.from_pretrained(model_dir)
        has_processor = (model_dir / "preprocessor_config.json").is_file()
        processor = PimImageProcessor.from_pretrained(model_dir) if has_processor else None
    except (OSError, ValueError) as error:  # what transformers raises for missing or invalid files
        raise PushError(f"Could not load the PIM model in {str(model_dir)!r}: {error}") from error
    if processor is None:
        logger.warning(
            f"{model_dir} has no preprocessor_config.json: uploading PimImageProcessor.for_image_size"
            f"({model.config.image_size}) (the paper's evaluation transform with ImageNet statistics)."
        )
        processor = PimImageProcessor.for_image_size(model.config.image_size)
    model.save_pretrained(staging_dir)
    processor.save_pretrained(staging_dir)
    outputs = read_training_outputs(model_dir)
    card = build_model_card(model.config, repo_id, outputs, model.num_parameters(), license_id)
    card.save(staging_dir / "README.md")
    for filename in METRICS_FILES.values():
        if (model_dir / filename).is_file():
            shutil.copy2(model_dir / filename, staging_dir / filename)
    return sorted(path.name for path in staging_dir.iterdir())


def upload(staging_dir: Path, repo_id: str, private: bool, commit_message: str) -> str:
    """Creates the repository if needed and uploads `staging_dir`; returns the commit URL."""
    if is_offline_mode():
        raise PushError(
            "HF_HUB_OFFLINE=1 disables uploads: unset it, or use --dry_run --local_dir DIR to stage locally."
        )
    if get_token() is None:
        raise PushError(
            "Not logged in to the Hugging Face Hub: run `hf auth login`, or set HF_TOKEN to a token with write "
            "access (https://huggingface.co/settings/tokens)."
        )
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=staging_dir, repo_id=repo_id, commit_message=commit_message)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise PushError(
                f"The Hub refused the token for {repo_id!r} (HTTP {status}): log in again with `hf auth login` "
                "using a token with write access, and check that you may write to that user or organisation."
            ) from error
        raise PushError(f"Upload to {repo_id!r} failed: {error}") from error
    return commit.commit_url


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Upload a trained PIM model and its model card to the Hub.")
    parser.add_argument("--model_dir", required=True, help="The output_dir of train_pim.py or a checkpoint-* folder.")
    parser.add_argument("--repo_id", required=True, help="Hub repository, 'user/name' or 'organisation/name'.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--commit_message", default="Upload PIM model", help="Message of the upload commit.")
    parser.add_argument("--license", dest="license_id", default=None, help="Hub license id for the card, e.g. 'mit'.")
    parser.add_argument(
        "--dry_run", action="store_true", help="Write what would be uploaded to --local_dir; upload nothing."
    )
    parser.add_argument("--local_dir", default=None, help="With --dry_run: an empty or new folder to write to.")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.dry_run and args.local_dir is None:
        parser.error("--dry_run needs --local_dir DIR, the folder to write the staged upload to.")
    if args.local_dir is not None and not args.dry_run:
        parser.error("--local_dir is only used with --dry_run.")
    try:
        validate_repo_id(args.repo_id)
    except HFValidationError as error:
        parser.error(f"--repo_id {args.repo_id!r} is not a valid Hub repository id: {error}")
    return args


def _run(argv: list[str]) -> int:
    """Stages the model, then uploads it (or, with --dry_run, leaves it in --local_dir)."""
    args = parse_args(argv)
    model_dir = Path(args.model_dir).expanduser()
    if not model_dir.is_dir():
        raise PushError(f"--model_dir {str(model_dir)!r} is not a folder.")
    if args.dry_run:
        local_dir = Path(args.local_dir).expanduser()
        if local_dir.exists() and any(local_dir.iterdir()):
            raise PushError(f"--local_dir {str(local_dir)!r} is not empty: give a new or empty folder.")
        local_dir.mkdir(parents=True, exist_ok=True)
        files = stage_model(model_dir, args.repo_id, local_dir, args.license_id)
        print(f"Dry run: wrote {', '.join(files)} to {local_dir}; nothing was uploaded.")
        return 0
    with tempfile.TemporaryDirectory() as staging_dir:
        files = stage_model(model_dir, args.repo_id, Path(staging_dir), args.license_id)
        url = upload(Path(staging_dir), args.repo_id, args.private, args.commit_message)
    print(f"Uploaded {', '.join(files)} to https://huggingface.co/{args.repo_id} ({url}).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `push_to_hub.py`: 0 on success, 2 on a user error."""
    return run_command("push_to_hub.py", _run, argv)


__all__ = ["PushError", "main", "stage_model", "upload"]


if __name__ == "__main__":
    sys.exit(main())
