from models.evaluate import evaluate
from models.examples import SplitData
from models.gbdt import train_gbdt


def test_gbdt_baseline_learns_the_context_features(synthetic_split: SplitData) -> None:
    data = synthetic_split
    model = train_gbdt(
        data.train.features,
        data.train.labels,
        data.validation.features,
        data.validation.labels,
        feature_names=data.feature_names,
        early_stopping_rounds=20,
        threads=1,
    )
    report = evaluate(model.predict(data.test.features), data.test.typologies)
    assert report.average_precision > report.prevalence + 0.3
