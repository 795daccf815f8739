"""
Where a model to load is (`--model_name_or_path`, pim-infer's MODEL): a model folder or a Hub id, checked before
anything is loaded, and the one error message for a model transformers could not load. Used by `train_pim.py` and the
tools.
"""

import os
from pathlib import Path

from huggingface_hub import is_offline_mode
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from .cli import UserInputError


# The weights files `from_pretrained` reads from a model folder (one of them).
WEIGHTS_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


def check_model_location(model_name_or_path: str, flag: str | None = None) -> bool:
    """
    Returns whether `model_name_or_path` is a local folder; raises when it is neither a model folder nor a Hub id.

    Args:
        model_name_or_path (`str`):
            A folder written by `save_pretrained`, or a Hub model id.
        flag (`str`, *optional*):
            The flag it was given with (e.g. `"--model_name_or_path"`), which the messages then name.

    Raises:
        `UserInputError`: a folder without `config.json` or without weights, a file, or a path that does not exist
        (and cannot be a Hub id); the message names the path and the fix.
    """
    path = Path(model_name_or_path).expanduser()
    given = f"{flag} {str(path)!r}" if flag else f"Model folder {str(path)!r}"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserInputError(
                f"{given} has no config.json: give the output_dir of train_pim.py, one of its checkpoint-* folders, "
                "or a folder written by `model.save_pretrained`."
            )
        if not any((path / name).is_file() for name in WEIGHTS_FILES):
            raise UserInputError(
                f"{given} has a config.json but no model weights ({SAFE_WEIGHTS_NAME}): copy the whole folder written "
                "by `model.save_pretrained` (or train_pim.py), or give one of its checkpoint-* folders."
            )
        return True
    if path.exists():
        given = f"{flag} {str(path)!r}" if flag else f"Model {str(path)!r}"
        raise UserInputError(f"{given} is a file: give the folder that holds config.json and model.safetensors.")
    try:
        validate_repo_id(model_name_or_path)
        looks_like_path = model_name_or_path.startswith((".", "~", os.sep))
    except HFValidationError:
        looks_like_path = True
    if looks_like_path:
        given = f"{flag} {model_name_or_path!r}" if flag else f"Model folder {model_name_or_path!r}"
        raise UserInputError(
            f"{given} does not exist: check the path (it should hold config.json and model.safetensors), or give a "
            "Hub model id such as 'user/pim-cub200'."
        )
    return False


def model_loading_error(
    model_name_or_path: str, is_local: bool, error: Exception, flag: str | None = None
) -> UserInputError:
    """
    The [`UserInputError`] to raise when transformers could not load `model_name_or_path` (found by
    [`check_model_location`]) with `error` (`OSError`, `ValueError`): a local folder's error, or why a Hub id could
    not be loaded (offline and not in the cache, unreachable, private) with the fix; `flag` as in
    [`check_model_location`].
    """
    if is_local:
        given = f"{flag} {model_name_or_path!r}" if flag else f"the model folder {model_name_or_path!r}"
        return UserInputError(f"Could not load {given}: {error}")
    given = f"{flag} {model_name_or_path!r}" if flag else repr(model_name_or_path)
    if is_offline_mode():
        return UserInputError(
            f"{given} is not a local folder, and the Hub is disabled (HF_HUB_OFFLINE=1) and this model is not in the "
            f"local cache: unset HF_HUB_OFFLINE, download it first (`hf download {model_name_or_path}`), or give the "
            "path of a model folder."
        )
    return UserInputError(
        f"Could not load {given} from the Hugging Face Hub (it is not a local folder either): {error}\nCheck the id, "
        "your connection, and for a private model that you are logged in (`hf auth login`)."
    )


__all__ = ["WEIGHTS_FILES", "check_model_location", "model_loading_error"]
