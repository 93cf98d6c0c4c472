"""Mean squared and mean absolute error for regression heads."""

import datasets
import evaluate


class RegressionErrors(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="MSE and MAE between predictions and references.", citation="",
            inputs_description="predictions, references: floats",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}))

    def _compute(self, predictions, references):
        n = len(references)
        errors = [p - r for p, r in zip(predictions, references)]
        return {"mse": sum(e * e for e in errors) / n if n else 0.0,
                "mae": sum(abs(e) for e in errors) / n if n else 0.0}
