"""
The model card's training data and citations: every official archive by its name, page, reference and model-index
type; Hub datasets by their id; a local folder never by its path; HERBS models cite HERBS.
"""

import json
import logging

import pytest
from huggingface_hub import ModelCard

from tiny_models import tiny_pim_config

from modeling_pim.data.archives import ARCHIVES
from modeling_pim.hub.model_card import (
    CITATION,
    HERBS_CITATION,
    TrainingDataset,
    TrainingOutputs,
    build_model_card,
    describe_dataset,
    read_training_outputs,
)


LABELS = ["cardinal", "blue jay", "house sparrow"]
TEST_METRICS = {"test": {"test_accuracy": 0.75, "test_num_samples": 12}}


def card_for(data_args: dict, tmp_path, data_source: str | None = None, **config_overrides) -> ModelCard:
    outputs = TrainingOutputs(metrics=TEST_METRICS, recipe={"data_args": data_args}, data_source=data_source)
    card = build_model_card(tiny_pim_config(LABELS, **config_overrides), "someone/pim", outputs)
    card.save(tmp_path / "README.md")
    return ModelCard.load(tmp_path / "README.md")


# `--dataset` → (card name, model-index type, Hub dataset, official page).
ARCHIVE_CARDS = {
    "cub200": (
        "CUB-200-2011",
        "bentrevett/caltech-ucsd-birds-200-2011",
        "bentrevett/caltech-ucsd-birds-200-2011",
        "https://www.vision.caltech.edu/datasets/cub_200_2011/",
    ),
    "nabirds": ("NABirds", "nabirds", None, "https://dl.allaboutbirds.org/nabirds"),
    "stanford_cars": ("Stanford Cars", "stanford_cars", None, "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"),
    "fgvc_aircraft": ("FGVC-Aircraft", "fgvc_aircraft", None, "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"),
    "flowers102": ("Oxford Flowers-102", "flowers102", None, "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    "stanford_dogs": ("Stanford Dogs", "stanford_dogs", None, "http://vision.stanford.edu/aditya86/ImageNetDogs/"),
    "inaturalist": ("iNaturalist", "inaturalist", None, "https://github.com/visipedia/inat_comp"),
}


def test_every_archive_has_a_card_entry():
    assert ARCHIVE_CARDS.keys() == ARCHIVES.keys()


@pytest.mark.parametrize("dataset", ARCHIVE_CARDS)
def test_a_model_trained_on_an_archive_names_it_links_it_and_cites_it(dataset, tmp_path):
    name, dataset_type, hub_id, homepage = ARCHIVE_CARDS[dataset]
    card = card_for({"dataset": dataset, "data_dir": "/data/archive"}, tmp_path)

    (result,) = card.data.eval_results
    assert (result.dataset_name, result.dataset_type, result.dataset_split) == (name, dataset_type, "test")
    assert card.data.datasets == ([hub_id] if hub_id else None)
    assert f"trained on\n[{name}]({homepage}) (3 classes)" in card.text
    assert f"The training data, [{name}]({homepage}): {ARCHIVES[dataset].reference}." in card.text
    assert "unspecified" not in card.text and "imagefolder" not in (tmp_path / "README.md").read_text()
    assert "/data/archive" not in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize(
    "data_args, data_source, name, config",
    [
        ({"dataset": "fgvc_aircraft", "dataset_config_name": "family"}, None, "FGVC-Aircraft (family)", "family"),
        ({"dataset": "fgvc_aircraft"}, "FGVC-Aircraft (variant) at /data/fgvc", "FGVC-Aircraft (variant)", "variant"),
        ({"dataset": "inaturalist", "dataset_config_name": "2018"}, None, "iNaturalist 2018", "2018"),
        # The version the reader found in the folder, from the data report (`2021_mini` before `2021`: not a prefix).
        ({"dataset": "inaturalist"}, "iNaturalist 2021_mini at /data/inat 2021", "iNaturalist 2021_mini", "2021_mini"),
        ({"dataset": "inaturalist"}, "iNaturalist 2021 at /data/inat", "iNaturalist 2021", "2021"),
        ({"dataset": "inaturalist"}, None, "iNaturalist", None),
    ],
)
def test_the_configuration_trained_on_is_named(data_args, data_source, name, config, tmp_path):
    dataset = describe_dataset({"data_args": data_args}, data_source)
    assert (dataset.name, dataset.config) == (name, config)
    (result,) = card_for(data_args, tmp_path, data_source).data.eval_results
    assert (result.dataset_name, result.dataset_config) == (name, config)


def test_the_data_report_source_is_read(tmp_path):
    (tmp_path / "data_report.json").write_text(json.dumps({"source": "iNaturalist 2019 at /data/inat", "splits": {}}))
    assert read_training_outputs(tmp_path).data_source == "iNaturalist 2019 at /data/inat"
    assert read_training_outputs(tmp_path / "nothing").data_source is None


@pytest.mark.parametrize(
    "data_args, expected",
    [
        (
            {"dataset": "hub", "dataset_name": "user/birds", "dataset_config_name": "full"},
            TrainingDataset("user/birds", "user/birds", hub_id="user/birds", config="full"),
        ),
        ({"dataset": "folders", "train_dir": "/data/train"}, TrainingDataset("custom image folders", "imagefolder")),
        ({"dataset": "synthetic"}, TrainingDataset("the synthetic fine-grained demo set", "synthetic")),
        ({}, TrainingDataset("an unspecified dataset", "unknown")),
    ],
)
def test_dataset_of_the_recipe(data_args, expected):
    assert describe_dataset({"data_args": data_args}) == expected


@pytest.mark.parametrize("where", ["absolute", "relative", "dot", "home"])
def test_a_local_dataset_is_never_published_by_its_path(where, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "work" / "hubds"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "work"))
    dataset_name = {"absolute": str(folder), "relative": "hubds", "dot": "./hubds", "home": "~/hubds"}[where]
    card_dir = tmp_path / "card"
    card_dir.mkdir()
    with caplog.at_level(logging.WARNING):
        card = card_for({"dataset": "hub", "dataset_name": dataset_name}, card_dir)

    text = (card_dir / "README.md").read_text()
    assert "hubds" not in text and str(tmp_path) not in text
    (result,) = card.data.eval_results
    assert (result.dataset_name, result.dataset_type) == ("a local dataset", "local") and card.data.datasets is None
    assert "trained on\na local dataset (3 classes)" in card.text
    assert (
        'The model was trained on a local dataset (--dataset_name is a folder of this machine): the card says "a local '
        'dataset" and does not publish its path; upload the data to the Hub and train from its id to link it.'
    ) in caplog.text


def test_a_hub_dataset_is_linked_and_shown_in_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    card = card_for({"dataset": "hub", "dataset_name": "user/birds"}, tmp_path)
    assert card.data.datasets == ["user/birds"] and card.data.eval_results[0].dataset_type == "user/birds"
    assert "trained on\n[`user/birds`](https://huggingface.co/datasets/user/birds) (3 classes)" in card.text
    assert "dataset_name: user/birds" in card.text


def test_a_herbs_model_cites_herbs_and_pim(tmp_path):
    herbs = card_for({"dataset": "cub200"}, tmp_path, use_bottom_up_fpn=True, selection_rule="predicted_class")
    assert f"```bibtex\n{CITATION}\n\n{HERBS_CITATION}\n```" in herbs.text
    pim = card_for({"dataset": "cub200"}, tmp_path)
    assert f"```bibtex\n{CITATION}\n```" in pim.text and HERBS_CITATION not in pim.text
    assert "title         = {Fine-grained Visual Classification with High-temperature Refinement and Background " in (
        HERBS_CITATION
    )
    assert "eprint        = {2303.06442}" in HERBS_CITATION
