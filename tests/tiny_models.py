"""The tiny PIM configuration shared by the tests of the tools that run a trained model (CPU, 64 px)."""

from collections.abc import Sequence

from modeling_pim import PimConfig


def tiny_pim_config(labels: Sequence[str], **overrides) -> PimConfig:
    """A `test_resnet` PIM at 64 px with every module on and named classes."""
    return PimConfig(
        **{
            "backbone": "test_resnet",
            "image_size": 64,
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "fpn_size": 32,
            "num_selects": [16, 8, 4, 2],
            "tokens_per_graph_node": 2,
            **overrides,
        }
    )
