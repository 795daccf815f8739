"""
Accuracy as an `evaluate` metric: the fraction (or, with `normalize=False`, the number) of predictions equal to their
references, optionally weighted per sample. Same name, inputs, configurations and output as the `accuracy` metric of
the Hugging Face Hub, bundled so that it loads offline with `evaluate.load(<path of this folder>)`.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Accuracy is the proportion of correct predictions among the examples:
accuracy = (number of predictions equal to their reference) / (number of examples).
With sample weights, each example counts with its weight. In the "multilabel" configuration an example is correct
only when its whole label vector equals the reference (subset accuracy).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels (`list[list[int]]` in the "multilabel" configuration).
    references (`list[int]`): ground truth labels, in the same format as `predictions`.
    normalize (`bool`, defaults to `True`): return the fraction of correct examples; if `False`, their (weighted)
        number.
    sample_weight (`list[float]`, *optional*): one weight per example; defaults to equal weights.

Returns:
    accuracy (`float`): in [0, 1] with `normalize=True`, else between 0 and the number (or total weight) of examples.

Examples:
    >>> accuracy = evaluate.load("modeling_pim/training/evaluate_modules/accuracy")
    >>> accuracy.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0])
    {'accuracy': 0.5}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Accuracy of class predictions ("multilabel" configuration: exact match of label vectors)."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name == "multilabel":
            label = datasets.Sequence(datasets.Value("int32"))
        else:
            label = datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/accuracy"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions {predictions.shape} and references {references.shape} must have the same shape."
            )
        correct = predictions == references
        if correct.ndim > 1:
            correct = correct.all(axis=tuple(range(1, correct.ndim)))
        weights = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != correct.shape:
            raise ValueError(
                f"sample_weight has shape {weights.shape}, expected one weight per example {correct.shape}."
            )
        score = float(np.dot(correct, weights))
        return {"accuracy": score / float(weights.sum()) if normalize else score}
