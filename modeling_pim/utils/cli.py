"""
The one way every command-line entry point fails (`pim-infer`, `pim-heatmap`, `pim-convert`, `pim-export`,
`push_to_hub.py`, `train_pim.py`).

A problem the user can fix (a path, a flag value, a damaged model file) is reported as one line,
`<program>: error: <what, which file or flag, which value, and the fix>`, with exit code 2 and no traceback, like
argparse reports a bad flag. A bug (any other exception) keeps its traceback. `--debug` (or `PIM_DEBUG=1`) prints the
traceback of a user error too.

Known library errors are translated here, once for every entry point:

- `safetensors.SafetensorError` (an empty, truncated or corrupt `.safetensors` file): the file is named, read from
  the traceback (the `.safetensors` path that the failing code was opening);
- `json.JSONDecodeError` while reading a `.json` file (a damaged `config.json` or `preprocessor_config.json`): the file
  is named with the line and column, and the fix fits the file (a model's file: download or re-save the model; any
  other: restore it). A message written from such an error with `raise ... from None` (e.g. the dataset readers',
  "restore it from the iNaturalist archive") is kept as it is;
- a [`UserInputError`] re-raised by a `DataLoader` worker process (e.g. an image that cannot be decoded, found while
  training): its original one-line message, without the worker's traceback;
- a `ValueError` of a configuration class's checks while `from_pretrained` builds it from a model's `config.json` (a
  field of the wrong type or value, e.g. `"fpn_size": "abc"`): the file is named (the model folder, or the Hub id,
  that `from_pretrained` was given).

Entry points whose parser is slow to build (`train_pim.py`'s, from transformers' `TrainingArguments`) cache their help
text ([`cache_help`]) and print it from the cache before importing anything heavy ([`print_cached_help`]).

This module imports neither torch nor transformers, so that `--help` and argument errors answer at once.
"""

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .cache import cache_dir


DEBUG_ENVIRONMENT_VARIABLE = "PIM_DEBUG"
DEBUG_FLAG = "--debug"
HELP_FLAGS = ("-h", "--help")
USER_ERROR_EXIT_CODE = 2


class UserInputError(Exception):
    """
    A problem the user can fix (a path, an id, a flag value): its message names the file or flag, the value and the
    fix. Entry points run through [`run_command`] report it on one line, without a traceback.
    """


def _before_double_dash(argv: Sequence[str]) -> list[str]:
    arguments = list(argv)
    return arguments[: arguments.index("--")] if "--" in arguments else arguments


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """Adds `--debug` (show the traceback of a user error) to an entry point's parser."""
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help=f"On an error, also print its full traceback (same as {DEBUG_ENVIRONMENT_VARIABLE}=1).",
    )


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether `argv` holds `--debug` (before any `--`) or the environment sets `PIM_DEBUG` to a value other than 0."""
    in_arguments = DEBUG_FLAG in _before_double_dash(argv)
    return in_arguments or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "0").strip() not in ("", "0")


def help_requested(argv: Sequence[str]) -> bool:
    """Whether `argv` asks for `-h` / `--help` (before any `--`), which argparse answers whatever else it holds."""
    return any(flag in _before_double_dash(argv) for flag in HELP_FLAGS)


def _help_cache_file(program: str, script: str | os.PathLike, distributions: Sequence[str]) -> Path:
    """
    Where the help text of `program` is cached: a file named by a digest of everything the text depends on (the
    script and every module of this package, the versions of `distributions`, Python's version and the terminal
    width argparse wraps to), so that any change makes a new cache entry.
    """
    digest = hashlib.sha256()
    versions = [f"{name}=={importlib.metadata.version(name)}" for name in distributions]
    width = shutil.get_terminal_size().columns
    digest.update("\n".join([program, sys.version, str(width), *versions]).encode())
    package = Path(__file__).resolve().parents[1]
    for source in [Path(script), *sorted(package.rglob("*.py"))]:
        digest.update(source.read_bytes())
    return cache_dir("help") / f"{program}-{digest.hexdigest()[:20]}.txt"


def print_cached_help(
    program: str, script: str | os.PathLike, distributions: Sequence[str], argv: Sequence[str]
) -> None:
    """
    When `argv` asks for help and the help text of `program` was cached ([`cache_help`]) for the same sources and
    versions, prints it and exits with 0, as argparse would, without importing anything heavy. Otherwise returns.
    A cache that cannot be read (no such file, an unreadable or misplaced cache folder, no home folder) or is empty is
    a miss: the caller then builds the help as usual, only slower.
    """
    if not help_requested(argv):
        return
    try:
        text = _help_cache_file(program, script, distributions).read_text(encoding="utf-8")
    except (OSError, RuntimeError, UnicodeDecodeError):  # RuntimeError: Path.home() finds no home folder
        return
    if text:
        sys.stdout.write(text)
        sys.exit(0)


def cache_help(program: str, script: str | os.PathLike, distributions: Sequence[str], text: str) -> None:
    """
    Caches the help text of a parser that is slow to build (e.g. one built from transformers' `TrainingArguments`,
    which imports torch), for [`print_cached_help`]. The text is written to a temporary file in the cache folder and
    renamed into place (atomic), so that a reader never sees a partly written file, whatever other processes write
    at the same time. A cache that cannot be written (an unwritable or misplaced cache folder, a full disk) is skipped
    and leaves nothing behind.
    """
    temporary = None
    try:
        path = _help_cache_file(program, script, distributions)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as file:
            temporary = Path(file.name)
            file.write(text)
        os.replace(temporary, path)
    except (OSError, RuntimeError):  # RuntimeError: Path.home() finds no home folder
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()


def _exception_chain(error: BaseException) -> Iterator[BaseException]:
    """
    `error`, then the exceptions it was raised from or while handling (`__cause__`, else `__context__` unless hidden
    by `raise ... from None`: the code that wrote the message has already said what the file and the fix are).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def _file_in_traceback(error: BaseException, suffix: str) -> str | None:
    """
    The existing file ending in `suffix` that the code raising `error` was working on: the first such path among the
    local variables of the traceback's frames, innermost frame first.
    """
    for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
        for value in list(frame.f_locals.values()):
            if isinstance(value, (str, os.PathLike)):
                path = os.fspath(value)
                if isinstance(path, str) and path.endswith(suffix) and os.path.isfile(path):
                    return path
    return None


def _invalid_safetensors_message(error: BaseException) -> str:
    path = _file_in_traceback(error, ".safetensors")
    detail = str(error).removeprefix("Error while deserializing header: ")
    if path is None:
        return (
            f"a model weights file is not a valid safetensors file ({detail}): download the model again or re-save "
            "it with `save_pretrained`."
        )
    size = os.path.getsize(path)
    what = "an empty file" if size == 0 else f"{size:,} bytes, {detail}"
    return (
        f"{path} is not a valid safetensors file ({what}): download it again, or re-save the model with "
        "`save_pretrained`."
    )


def _is_model_file(path: str) -> bool:
    """Whether `path` is a file of a saved model: it lies in a folder with the model's `config.json`."""
    return os.path.isfile(os.path.join(os.path.dirname(path), "config.json"))


def _invalid_json_message(error: json.JSONDecodeError) -> str | None:
    path = _file_in_traceback(error, ".json")
    if path is None:
        return None
    if _is_model_file(path):
        fix = "fix the file, or download the model again or re-save it with `save_pretrained`"
    else:
        fix = "fix the file, or restore it from where it came from"
    return f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): {fix}."


def _is_configuration(value: Any) -> bool:
    """Whether `value` is a transformers configuration (`PreTrainedConfig`), without importing transformers."""
    return any(
        cls.__name__ in ("PreTrainedConfig", "PretrainedConfig") and cls.__module__.startswith("transformers.")
        for cls in type(value).__mro__
    )


def _invalid_config_message(error: ValueError) -> str | None:
    """
    When `error` was raised by a configuration being built from a model's `config.json` by `from_pretrained`, the
    message naming that file; else `None`. The model is the `pretrained_model_name_or_path` of the innermost
    `from_pretrained` frame that leads to the configuration's frame.
    """
    model = None
    for frame, _ in traceback.walk_tb(error.__traceback__):  # outermost frame first
        given = frame.f_locals.get("pretrained_model_name_or_path")
        if isinstance(given, (str, os.PathLike)):
            model = os.fspath(given)
        if model is not None and _is_configuration(frame.f_locals.get("self")):
            if os.path.isdir(model):
                config_file = os.path.join(model, "config.json")
            else:  # a config file given directly, or a Hub id
                config_file = model if os.path.isfile(model) else f"config.json of {model!r}"
            return (
                f"{config_file} is not a valid {type(frame.f_locals['self']).__name__}: {error} Fix the file, or "
                "download the model again or re-save it with `save_pretrained`."
            )
    return None


def user_error_message(error: BaseException) -> str | None:
    """
    The message to report for `error` when the user can fix it, else `None` (a bug, shown with its traceback).

    The exceptions `error` was raised from are searched for the library errors this module translates (see the module
    docstring); then a [`UserInputError`] gives its own message.
    """
    for link in _exception_chain(error):
        if type(link).__name__ == "SafetensorError" and type(link).__module__.startswith("safetensors"):
            return _invalid_safetensors_message(link)
        message = None
        if isinstance(link, json.JSONDecodeError):
            message = _invalid_json_message(link)
        elif isinstance(link, ValueError):
            message = _invalid_config_message(link)
        if message is not None:
            return message
    if isinstance(error, UserInputError):
        return _original_message(error)
    return None


def _original_message(error: BaseException) -> str:
    """
    The message of `error`; for an exception re-raised by a `torch.utils.data.DataLoader` worker, whose message is
    `"Caught <type> in DataLoader worker process <n>.\nOriginal Traceback ..."`, the original message (the last line
    of that traceback, after `<module>.<type>: `).
    """
    message = str(error)
    if not (message.startswith("Caught ") and "\nOriginal Traceback" in message):
        return message
    last_line = message.rstrip().splitlines()[-1]
    for name in (f"{type(error).__module__}.{type(error).__qualname__}", type(error).__qualname__):
        if last_line.startswith(f"{name}: "):
            return last_line.removeprefix(f"{name}: ")
    return message


def run_command(program: str, command: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """
    Runs `command(argv)` (which parses the arguments and does the work) the way every entry point runs.

    Args:
        program (`str`):
            The name in the error line, as argparse prints it (`pim-infer`, `train_pim.py`).
        command (`Callable[[list[str]], Any]`):
            The entry point's work; returns its exit code (anything but an `int`, e.g. `None` or a result, means 0).
        argv (`Sequence[str]`, *optional*):
            The arguments, `sys.argv[1:]` by default.

    Returns:
        `int`: the command's exit code, or 2 after printing `<program>: error: <message>` to stderr for a user error
        (preceded by its traceback with `--debug` or `PIM_DEBUG=1`). Any other exception propagates with its
        traceback.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        status = command(arguments)
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        if debug_requested(arguments):
            traceback.print_exception(error)
        print(f"{program}: error: {message}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return status if isinstance(status, int) else 0


def _check_folder(folder: Path, flag: str, given: str) -> None:
    """
    Raises a `UserInputError` naming `flag` when `folder` could not be created and written to: the nearest existing
    folder on its path is a file or is not writable.
    """
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        raise UserInputError(f"{flag} {given!r}: {str(existing)!r} is a file, not a folder: choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(
            f"{flag} {given!r}: the folder {str(existing)!r} is not writable: choose a path you can write to."
        )


def check_output_directory(path: str | os.PathLike, flag: str) -> Path:
    """
    Checks an output folder before any work starts (without creating it, so that a failed run leaves nothing behind).

    Raises:
        `UserInputError`: the path or one of its parents is a file, or the folder could not be created or written to;
        the message names `flag`.
    """
    given = os.fspath(path)
    folder = Path(given).expanduser()
    _check_folder(folder, flag, given)
    return folder


def check_output_file(path: str | os.PathLike, flag: str, suffixes: Sequence[str], default_suffix: str) -> Path:
    """
    Checks an output file before any work starts (without creating anything): a path without an extension gets
    `default_suffix`. Returns the path to write, the one to report to the user; its folder may not exist yet.

    Args:
        path (`str` or `os.PathLike`):
            The path the user gave.
        flag (`str`):
            The flag it came from, for the error messages (e.g. `"--output"`).
        suffixes (`Sequence[str]`):
            The extensions the writer supports, lower case with the dot (e.g. `(".png", ".pdf")`).
        default_suffix (`str`):
            The extension added to a path that has none.

    Raises:
        `UserInputError`: an unsupported extension, a path that is a folder, or a folder that could not be created or
        written to; the message names `flag`, the value and the fix.
    """
    given = os.fspath(path)
    output = Path(given).expanduser()
    if not output.suffix:
        output = output.with_name(output.name + default_suffix)
    elif output.suffix.lower() not in suffixes:
        raise UserInputError(
            f"{flag} {given!r}: {output.suffix!r} is not a supported format; use one of {', '.join(suffixes)} (a "
            f"name without an extension gets {default_suffix})."
        )
    if output.is_dir():
        raise UserInputError(
            f"{flag} {given!r} is a folder: give a file name such as {str(output / ('output' + default_suffix))!r}."
        )
    _check_folder(output.parent, flag, given)
    return output


__all__ = [
    "UserInputError",
    "add_debug_argument",
    "cache_help",
    "debug_requested",
    "help_requested",
    "print_cached_help",
    "check_output_directory",
    "check_output_file",
    "run_command",
    "user_error_message",
]
