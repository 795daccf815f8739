"""
What `push_to_hub.py` stages next to the model: the Inference Endpoints handler and the Gradio demo Space.

- Model repository: `handler.py` ([`modeling_pim.hub.handler`]) and a `requirements.txt` with what the handler and
  the model's remote code import, at the versions this package declares (the endpoint toolkit's own transformers is
  too old for the model's code).
- Space: `app.py` ([`modeling_pim.hub.app`]), the modules of this package that `app.py` needs under
  `modeling_pim/` (the heatmap code, which is not on PyPI, and the model classes it reads), a `requirements.txt`
  built the same way, a README whose front
  matter has `sdk: gradio` and `models: [<model id>]` (the model page then links to the Space), and the example image
  in `examples/`.

The package modules are staged as `register_for_auto_class` stages a model's code: the files the app imports,
followed through their imports of this package (relative or absolute, at any depth, inside functions too), copied
unchanged, so there is one copy of the logic to maintain. Packages the app only passes through get an empty
`__init__.py` (the real top-level one registers the model classes with transformers' Auto classes, which the Space
does not use).
"""

import ast
import importlib.metadata
import importlib.util
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


PACKAGE_NAME = "modeling_pim"
DISTRIBUTION_NAME = "modeling-pim"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
HANDLER_TEMPLATE = Path(__file__).with_name("handler.py")
APP_TEMPLATE = Path(__file__).with_name("app.py")
REQUIREMENTS_FILE = "requirements.txt"
# Needed without being imported by name: transformers' TorchvisionBackend (the base of PimImageProcessor) uses it.
INDIRECT_REQUIREMENTS = ("torchvision",)
# Installed by the Space from the README's `sdk_version`: listing it again would fight that pin.
SPACE_PROVIDED = ("gradio",)
STAGED_PACKAGE_INIT = '"""Modules of the modeling-pim package that app.py imports, staged by push_to_hub.py."""\n'


def _imports(path: Path, module_name: str | None = None) -> set[str]:
    """
    Absolute names of every module `path` imports, at any place in the file. `module_name` is the file's module in
    this package; `None` for a file outside it (a script, a model repository's code), whose relative imports name
    files beside it and are left out.
    """
    package = None
    if module_name is not None:
        package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and package is None:
                continue
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            names.add(base)
            # `from . import x` imports the submodule x when there is one.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _package_file(module_name: str) -> Path | None:
    """The file of a module of this package (`modeling_pim.tools.heatmap` → `.../tools/heatmap.py`), if it exists."""
    parts = module_name.split(".")
    if parts[0] != PACKAGE_NAME:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str | None:
    """The module name of a file of this package (`.../tools/heatmap.py` → `modeling_pim.tools.heatmap`), else `None`."""
    path = path.resolve()
    if not path.is_relative_to(PACKAGE_ROOT):
        return None
    parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join((PACKAGE_NAME, *parts[: -1 if parts[-1] == "__init__" else None]))


def package_closure(entry_point: Path) -> list[Path]:
    """
    The files of this package that `entry_point` (a script outside it) needs: the modules it imports from
    `modeling_pim`, and recursively theirs. Sorted; the entry point itself is not included.
    """
    pending = [name for name in _imports(entry_point) if _package_file(name)]
    found: dict[str, Path] = {}
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found[name] = _package_file(name)
        pending.extend(other for other in _imports(found[name], name) if _package_file(other) and other not in found)
    return sorted(set(found.values()))


def third_party_modules(files: Iterable[Path]) -> set[str]:
    """Top-level names of the modules `files` import that are neither the standard library nor this package."""
    names = set()
    for path in files:
        for name in _imports(path, _module_name(path)):
            top = name.partition(".")[0]
            if top not in sys.stdlib_module_names and top != PACKAGE_NAME:
                names.add(top)
    return names


def python_requirements(files: Iterable[Path], exclude: Iterable[str] = ()) -> list[str]:
    """
    `requirements.txt` lines for running `files`: one distribution per imported third-party module (plus
    `INDIRECT_REQUIREMENTS`), with the version range this package declares for it (`setup.cfg` `install_requires`,
    read from the installed package's metadata), sorted.

    Raises:
        `importlib.metadata.PackageNotFoundError`: the `modeling-pim` package is not installed (`pip install -e .`).
    """
    declared = {
        canonicalize_name(requirement.name): requirement
        for requirement in map(Requirement, importlib.metadata.requires(DISTRIBUTION_NAME) or ())
        if requirement.marker is None
    }
    distributions = importlib.metadata.packages_distributions()
    names = {distributions.get(module, [module])[0] for module in third_party_modules(files)}
    names.update(INDIRECT_REQUIREMENTS)
    excluded = {canonicalize_name(name) for name in exclude}
    lines = {str(declared.get(canonicalize_name(name), name)) for name in names if canonicalize_name(name) not in excluded}
    return sorted(lines, key=str.lower)


def stage_endpoint_handler(staging_dir: str | Path) -> list[str]:
    """
    Writes `handler.py` and `requirements.txt` into the model repository folder `staging_dir`, after the model's
    code (`save_pretrained` writes it); the requirements cover the handler and every `.py` file of the folder.
    Returns the two file names.
    """
    staging_dir = Path(staging_dir)
    shutil.copyfile(HANDLER_TEMPLATE, staging_dir / "handler.py")
    requirements = python_requirements(sorted(staging_dir.glob("*.py")))
    (staging_dir / REQUIREMENTS_FILE).write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return ["handler.py", REQUIREMENTS_FILE]


def space_card(model_id: str, space_id: str, sdk_version: str, license_id: str | None = None) -> SpaceCard:
    """The Space's README: Gradio front matter linking the model (`models: [model_id]`) and what the demo shows."""
    data = SpaceCardData(
        title=space_id.split("/")[-1],
        sdk="gradio",
        sdk_version=sdk_version,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py",
        models=[model_id],
        license=license_id,
        tags=["pim", "fine-grained-visual-classification", "image-classification"],
        short_description="Fine-grained classification with a heatmap",
        pinned=False,
    )
    body = f"""
# {space_id.split("/")[-1]}

Demo of [`{model_id}`](https://huggingface.co/{model_id}), a PIM fine-grained image classifier: upload an image to see
the model's five most likely classes and, beside them, the heatmap of the regions that drove the prediction (the
class's token logits of every layer, averaged) with the tokens PIM's selector kept.

The model's weights, configuration and processor are loaded from the model repository. The folder `modeling_pim/`
holds the modules of the `modeling-pim` package that `app.py` imports (the heatmap and the model classes it reads),
copied unchanged by `push_to_hub.py --space_id`. The app runs locally too: `PIM_MODEL=<model id or folder> python app.py`.
"""
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n{body}")


def stage_space(
    space_dir: str | Path,
    model_repository_dir: str | Path,
    model_id: str,
    space_id: str,
    sdk_version: str,
    example_image: str | Path | None = None,
    license_id: str | None = None,
) -> list[str]:
    """
    Writes the Gradio Space of `model_id` into `space_dir`: `app.py`, the package modules it needs under
    `modeling_pim/`, `requirements.txt` (for the app, those modules and the model's code, the `.py` files of the
    staged model repository `model_repository_dir`), `README.md` and, when given, the example image (in
    `examples/`, under its name). Returns the written paths relative to `space_dir`, sorted.
    """
    space_dir = Path(space_dir)
    shutil.copyfile(APP_TEMPLATE, space_dir / "app.py")
    modules = package_closure(APP_TEMPLATE)
    staged = [Path(PACKAGE_NAME) / module.relative_to(PACKAGE_ROOT) for module in modules]
    for module, target in zip(modules, staged):
        (space_dir / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module, space_dir / target)
    for package in {package for target in staged for package in target.parents if package != Path(".")}:
        if not (space_dir / package / "__init__.py").exists():
            (space_dir / package / "__init__.py").write_text(STAGED_PACKAGE_INIT, encoding="utf-8")
    model_code = sorted(Path(model_repository_dir).glob("*.py"))
    requirements = python_requirements([APP_TEMPLATE, *modules, *model_code], exclude=SPACE_PROVIDED)
    (space_dir / REQUIREMENTS_FILE).write_text("\n".join(requirements) + "\n", encoding="utf-8")
    space_card(model_id, space_id, sdk_version, license_id).save(space_dir / "README.md")
    if example_image is not None:
        (space_dir / "examples").mkdir()
        shutil.copyfile(example_image, space_dir / "examples" / Path(example_image).name)
    return sorted(path.relative_to(space_dir).as_posix() for path in space_dir.rglob("*") if path.is_file())


__all__ = [
    "package_closure",
    "python_requirements",
    "space_card",
    "stage_endpoint_handler",
    "stage_space",
    "third_party_modules",
]
