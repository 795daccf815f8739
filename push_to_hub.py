"""
Uploads a trained PIM model to the Hugging Face Hub with a model card, and optionally a Gradio demo Space:

    python push_to_hub.py --model_dir OUTPUT_DIR --repo_id USER/NAME [--space_id USER/NAME-demo] [--private]
    python push_to_hub.py --model_dir OUTPUT_DIR --repo_id USER/NAME --dry_run --local_dir DIR
        [--space_id USER/NAME-demo --space_local_dir DIR2]

The model and its image processor are loaded from `--model_dir` and saved again into a staging folder, so that the
upload always holds what `save_pretrained` writes (`model.safetensors`, `config.json` with `auto_map`,
`preprocessor_config.json`, the model's code), plus

- `README.md`, the model card ([`modeling_pim.hub.model_card.build_model_card`]), whose `widget:` shows an example
  image of the repository with the model's own answer ([`modeling_pim.hub.widget`]): `--widget_image`, else the
  first test image the training run recorded (`test_example.<ext>`), staged as `widget_example.<ext>`;
- `handler.py` and `requirements.txt` for Inference Endpoints ([`modeling_pim.hub.handler`]);
- the training run's `eval_results.json` / `test_results.json` when present; results (or a test example) written
  before the model (a previous model's, left in the same folder) are refused.

`--space_id` also stages a Gradio Space ([`modeling_pim.hub.staging.stage_space`]): `app.py`, the package modules it
imports, `requirements.txt`, a README linking the model, and the example image. `--dry_run` writes the model
repository to `--local_dir` (and the Space to `--space_local_dir`) and uploads nothing (it works offline).

The Hub token comes from the usual places: the `HF_TOKEN` environment variable or `hf auth login`.
"""

import argparse
import importlib.metadata
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import HfApi, get_token, is_offline_mode
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from modeling_pim.hub.staging import stage_endpoint_handler, stage_space
from modeling_pim.utils.cli import UserInputError, add_debug_argument, check_output_directory, run_command


logger = logging.getLogger(__name__)


class PushError(UserInputError):
    """A problem the user can fix (a path, an id, a login): reported without a traceback."""


def stage_model(
    model_dir: Path,
    repo_id: str,
    staging_dir: Path,
    license_id: str | None = None,
    widget_image: Path | None = None,
    space_id: str | None = None,
) -> list[str]:
    """
    Writes everything to upload into `staging_dir` and returns the file names, sorted. The card's example image is
    `widget_image`, else the training run's first test image, else there is none (logged).
    """
    from modeling_pim import PimForImageClassification, PimImageProcessor
    from modeling_pim.hub.model_card import METRICS_FILES, build_model_card, read_training_outputs
    from modeling_pim.hub.widget import find_test_example, stage_widget_image, widget_output
    from modeling_pim.training.run_folder import RESULT_AGE_TOLERANCE_SECONDS, results_older_than_model

    if not (model_dir / "config.json").is_file():
        raise PushError(
            f"--model_dir {str(model_dir)!r} has no config.json: give the output_dir of train_pim.py or a folder "
            "written by `model.save_pretrained`."
        )
    stale = results_older_than_model(model_dir)
    if stale:
        names = ", ".join(path.name for path in stale)
        raise PushError(
            f"--model_dir {str(model_dir)!r}: {names}, written more than {RESULT_AGE_TOLERANCE_SECONDS:g} s before "
            "its model.safetensors, describe a previous model (e.g. of an earlier run in the same --output_dir), and "
            "the card would publish them as this model's. Evaluate this model again (python train_pim.py ... "
            f"--do_train false --model_name_or_path {model_dir} --output_dir {model_dir}, with the data flags of its "
            "training), or remove those files; if they are this model's (a copied folder), `touch` them."
        )
    example, origin = (widget_image, "--widget_image") if widget_image else (find_test_example(model_dir), "")
    widget_file = None
    if example is not None:
        try:
            widget_file = stage_widget_image(example, staging_dir)
        except ValueError as error:
            origin = origin or "The test example the training run recorded,"
            raise PushError(f"{origin} {error}: give an image file (JPEG, PNG) with --widget_image.") from error
    else:
        logger.warning(
            f"{model_dir} has no test example (test_example.*, recorded by train_pim.py) and no --widget_image was "
            "given: the card has no widget example."
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
    if "test" not in outputs.metrics:
        logger.warning(
            f"{model_dir} has no {METRICS_FILES['test']}: the card has no model-index (the Hub's results table); "
            "evaluate the model on a test split with train_pim.py to get one."
        )
    widget = None
    if widget_file is not None:
        widget = {"src": widget_file, "output": widget_output(model.eval(), processor, staging_dir / widget_file)}
    card = build_model_card(
        model.config, repo_id, outputs, model.num_parameters(), license_id, widget=widget, space_id=space_id
    )
    card.save(staging_dir / "README.md")
    try:
        stage_endpoint_handler(staging_dir)
    except importlib.metadata.PackageNotFoundError as error:
        raise PushError(
            "The modeling-pim package is not installed, so the versions its code needs are unknown: install it "
            "(`pip install -e .` in the repository)."
        ) from error
    for filename in METRICS_FILES.values():
        if (model_dir / filename).is_file():
            shutil.copy2(model_dir / filename, staging_dir / filename)
    return sorted(path.name for path in staging_dir.iterdir())


def gradio_version() -> str:
    """The installed Gradio version, which the Space's README pins (`sdk_version`): the version the app was tested on."""
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError as error:
        raise PushError(
            "--space_id needs Gradio installed (the Space pins the version the app is tested with): "
            "pip install -e '.[space]'."
        ) from error


def check_can_upload() -> None:
    """Raises a [`PushError`] when uploads are disabled (`HF_HUB_OFFLINE`) or no token is available."""
    if is_offline_mode():
        raise PushError(
            "HF_HUB_OFFLINE=1 disables uploads: unset it, or use --dry_run --local_dir DIR to stage locally."
        )
    if get_token() is None:
        raise PushError(
            "Not logged in to the Hugging Face Hub: run `hf auth login`, or set HF_TOKEN to a token with write "
            "access (https://huggingface.co/settings/tokens)."
        )


def upload(
    staging_dir: Path, repo_id: str, private: bool, commit_message: str, repo_type: str = "model"
) -> str:
    """
    Creates the repository if needed (a Gradio Space for `repo_type="space"`) and uploads `staging_dir`; returns the
    commit URL.
    """
    api = HfApi()
    space_sdk = "gradio" if repo_type == "space" else None
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk)
        commit = api.upload_folder(
            folder_path=staging_dir, repo_id=repo_id, repo_type=repo_type, commit_message=commit_message
        )
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise PushError(
                f"The Hub refused the token for the {repo_type} {repo_id!r} (HTTP {status}): log in again with "
                "`hf auth login` using a token with write access, and check that you may write to that user or "
                "organisation."
            ) from error
        raise PushError(f"Upload to the {repo_type} {repo_id!r} failed: {error}") from error
    return commit.commit_url


def _check_empty_folder(path: str, flag: str) -> Path:
    """
    The output folder `path` of `flag`, checked before any work (not created): it must be new or empty, and
    creatable and writable ([`check_output_directory`]).
    """
    folder = check_output_directory(path, flag)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise PushError(f"{flag} {path!r} is not an empty folder: give a new or empty folder.")
    return folder


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="push_to_hub.py", description="Upload a trained PIM model and its model card to the Hub.")
    parser.add_argument("--model_dir", required=True, help="The output_dir of train_pim.py or a checkpoint-* folder.")
    parser.add_argument("--repo_id", required=True, help="Hub repository, 'user/name' or 'organisation/name'.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--commit_message", default="Upload PIM model", help="Message of the upload commit.")
    parser.add_argument("--license", dest="license_id", default=None, help="Hub license id for the card, e.g. 'mit'.")
    parser.add_argument(
        "--dry_run", action="store_true", help="Write what would be uploaded to --local_dir; upload nothing."
    )
    parser.add_argument("--local_dir", default=None, help="With --dry_run: an empty or new folder to write to.")
    parser.add_argument(
        "--widget_image",
        default=None,
        help="Example image of the model page, e.g. one of your test set (default: the first test image of the "
        "training run).",
    )
    parser.add_argument(
        "--space_id", default=None, help="Also publish a Gradio demo Space, 'user/name' (not the model's id)."
    )
    parser.add_argument(
        "--space_local_dir", default=None, help="With --dry_run and --space_id: an empty or new folder for the Space."
    )
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    for flag, repo_id in (("--repo_id", args.repo_id), ("--space_id", args.space_id)):
        try:
            if repo_id is not None:
                validate_repo_id(repo_id)
        except HFValidationError as error:
            parser.error(f"{flag} {repo_id!r} is not a valid Hub repository id: {error}")
    if args.space_id is not None and args.space_id == args.repo_id:
        parser.error(
            f"--space_id {args.space_id!r} is the model's --repo_id: give the Space a name of its own, e.g. "
            f"{args.repo_id + '-demo'!r}."
        )
    if args.dry_run and args.local_dir is None:
        parser.error("--dry_run needs --local_dir DIR, the folder to write the staged upload to.")
    if args.local_dir is not None and not args.dry_run:
        parser.error("--local_dir is only used with --dry_run.")
    if args.space_local_dir is not None and not (args.dry_run and args.space_id):
        parser.error("--space_local_dir is only used with --dry_run and --space_id.")
    if args.dry_run and args.space_id and args.space_local_dir is None:
        parser.error("--dry_run with --space_id needs --space_local_dir DIR2, the folder to write the Space to.")
    return args


def _run(argv: list[str]) -> int:
    """
    Stages the model (and the Space), then uploads them (or, with --dry_run, leaves them in --local_dir and
    --space_local_dir).
    """
    args = parse_args(argv)
    model_dir = Path(args.model_dir).expanduser()
    widget_image = None if args.widget_image is None else Path(args.widget_image).expanduser()
    if not model_dir.is_dir():
        raise PushError(f"--model_dir {str(model_dir)!r} is not a folder.")
    sdk_version = gradio_version() if args.space_id else None
    if args.private and args.space_id:
        logger.warning(
            f"The model is private: the Space {args.space_id} can only load it with a token. Add a secret HF_TOKEN "
            "(a read token) in the Space's settings."
        )
    if args.dry_run:
        local_dir = _check_empty_folder(args.local_dir, "--local_dir")
        space_dir = None if args.space_id is None else _check_empty_folder(args.space_local_dir, "--space_local_dir")
        if space_dir is not None and (
            local_dir.resolve().is_relative_to(space_dir.resolve()) or space_dir.resolve().is_relative_to(local_dir.resolve())
        ):
            raise PushError(
                f"--space_local_dir {args.space_local_dir!r} and --local_dir {args.local_dir!r} overlap: the model "
                "repository and the Space need separate folders."
            )
        local_dir.mkdir(parents=True, exist_ok=True)
        files = stage_model(model_dir, args.repo_id, local_dir, args.license_id, widget_image, args.space_id)
        print(f"Dry run: wrote {', '.join(files)} to {local_dir}; nothing was uploaded.")
        if space_dir is not None:
            space_dir.mkdir(parents=True, exist_ok=True)
            space_files = stage_space(
                space_dir,
                local_dir,
                args.repo_id,
                args.space_id,
                sdk_version,
                _widget_file(local_dir, files),
                args.license_id,
            )
            print(f"Dry run: wrote the Space ({', '.join(space_files)}) to {space_dir}; nothing was uploaded.")
        return 0
    check_can_upload()
    with tempfile.TemporaryDirectory() as staging_dir, tempfile.TemporaryDirectory() as space_dir:
        staging_dir, space_dir = Path(staging_dir), Path(space_dir)
        files = stage_model(model_dir, args.repo_id, staging_dir, args.license_id, widget_image, args.space_id)
        if args.space_id:
            stage_space(
                space_dir,
                staging_dir,
                args.repo_id,
                args.space_id,
                sdk_version,
                _widget_file(staging_dir, files),
                args.license_id,
            )
        url = upload(staging_dir, args.repo_id, args.private, args.commit_message)
        print(f"Uploaded {', '.join(files)} to https://huggingface.co/{args.repo_id} ({url}).")
        if args.space_id:
            url = upload(space_dir, args.space_id, args.private, args.commit_message, repo_type="space")
            print(f"Uploaded the demo Space to https://huggingface.co/spaces/{args.space_id} ({url}).")
    return 0


def _widget_file(staging_dir: Path, files: list[str]) -> Path | None:
    """The example image among the `files` staged into the model repository folder `staging_dir`, if any."""
    from modeling_pim.hub.widget import WIDGET_IMAGE_STEM

    return next((staging_dir / name for name in files if Path(name).stem == WIDGET_IMAGE_STEM), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `push_to_hub.py`: 0 on success, 2 on a user error."""
    return run_command("push_to_hub.py", _run, argv)


__all__ = ["PushError", "check_can_upload", "main", "stage_model", "upload"]


if __name__ == "__main__":
    sys.exit(main())
