"""Gradient-boosting libraries' own evaluation logs, on datasets that ship with scikit-learn.

    python -u gbdt.py xgb_native  > ../logs/frameworks/xgboost_train_early_stop.log 2>&1  # [0]\ttrain-rmse:…\teval-rmse:…
    python -u gbdt.py xgb_sklearn > ../logs/frameworks/xgboost_sklearn_classifier.log 2>&1  # [0]\tvalidation_0-logloss:…
    python -u gbdt.py lgb         > ../logs/frameworks/lightgbm_train.log 2>&1             # [1]\tvalid_0's binary_logloss: …
"""

import sys

from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

import _truth

MODE = sys.argv[1]


def xgb_native():
    import xgboost as xgb

    X, y = load_diabetes(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state=0)
    dtrain, dvalid = xgb.DMatrix(Xtr, label=ytr), xgb.DMatrix(Xva, label=yva)
    # n_estimators is a scikit-learn-API name: xgb.train ignores it and warns (a common slip, kept on purpose)
    params = {"objective": "reg:squarederror", "eta": 0.1, "max_depth": 3, "subsample": 0.8,
              "eval_metric": ["rmse", "mae"], "seed": 0, "n_estimators": 200}
    print(params)
    evals_result = {}
    bst = xgb.train(params, dtrain, num_boost_round=200, evals=[(dtrain, "train"), (dvalid, "eval")],
                    evals_result=evals_result, early_stopping_rounds=10)
    print(f"best_iteration={bst.best_iteration} best_score={bst.best_score}")
    names = [(d, m) for d in ("train", "eval") for m in ("rmse", "mae")]
    _truth.write(
        "xgboost_train_early_stop", framework="XGBoost (native xgb.train)", packages=("xgboost", "scikit-learn"),
        script="gbdt.py", args="xgb_native",
        step="boosting round, 0-based, printed as '[N]' at the start of the line",
        metrics={f"{d}-{m}": [[i, f"{v:.5f}"] for i, v in enumerate(evals_result[d][m])] for d, m in names},
        printed_as={f"{d}-{m}": f"\t{d}-{m}:{{}}" for d, m in names},
        metric_lines={f"{d}-{m}": "one '[N]\\ttrain-rmse:…\\ttrain-mae:…\\teval-rmse:…\\teval-mae:…' line per "
                                  "round (verbose_eval=True, the default)" for d, m in names},
        recorded={f"{d}-{m}": [[i, v] for i, v in enumerate(evals_result[d][m])] for d, m in names},
        params={k: v for k, v in params.items()},
        not_metrics={
            str(params): "the script prints its params dict once at start (a Python dict line, like the HF "
                         "Trainer's metric dicts, but params)",
            "WARNING: …/learner.cc:…: Parameters: { \"n_estimators\" } are not used.":
                "XGBoost's own warning (two lines) about the unused n_estimators param",
            f"best_iteration={bst.best_iteration} best_score={bst.best_score}":
                "the script's summary of early stopping (name=value pairs, printed once at the end; "
                "best_score repeats eval-mae of the best round at full precision)",
        },
        notes=["early_stopping_rounds=10 on the last metric (eval-mae); training stops 10 rounds after the best "
               "one. XGBoost 3 prints nothing about early stopping itself."],
    )


def xgb_sklearn():
    from xgboost import XGBClassifier

    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state=0)
    clf = XGBClassifier(n_estimators=25, max_depth=3, learning_rate=0.2, eval_metric=["logloss", "error"],
                        random_state=0, n_jobs=2)
    print(clf)
    clf.fit(Xtr, ytr, eval_set=[(Xtr, ytr), (Xva, yva)], verbose=True)
    res = clf.evals_result()
    acc = clf.score(Xva, yva)
    print(f"validation accuracy: {acc:.4f}")
    names = [(d, m) for d in ("validation_0", "validation_1") for m in ("logloss", "error")]
    metrics = {f"{d}-{m}": [[i, f"{v:.5f}"] for i, v in enumerate(res[d][m])] for d, m in names}
    metrics["validation accuracy"] = [[None, f"{acc:.4f}"]]
    _truth.write(
        "xgboost_sklearn_classifier", framework="XGBoost (scikit-learn API, XGBClassifier)",
        packages=("xgboost", "scikit-learn"), script="gbdt.py", args="xgb_sklearn",
        step="boosting round, 0-based, printed as '[N]'; the final accuracy has none",
        metrics=metrics,
        printed_as={**{f"{d}-{m}": f"\t{d}-{m}:{{}}" for d, m in names}, "validation accuracy": "validation accuracy: {}"},
        metric_lines={**{f"{d}-{m}": "one '[N]\\tvalidation_0-logloss:…\\tvalidation_0-error:…\\t"
                                     "validation_1-logloss:…\\tvalidation_1-error:…' line per round "
                                     "(validation_0 is the training set, validation_1 the held-out set, in "
                                     "eval_set order)" for d, m in names},
                      "validation accuracy": "the script's last line, clf.score on the held-out set"},
        recorded={**{f"{d}-{m}": [[i, v] for i, v in enumerate(res[d][m])] for d, m in names},
                  "validation accuracy": [[None, acc]]},
        params=clf.get_params(),
        not_metrics={"XGBClassifier(base_score=None, booster=None, callbacks=None, …, n_jobs=2, …)":
                         "print(clf): the estimator repr, many name=value pairs over several lines"},
        notes=["params is clf.get_params() (what the repr shows; printed once at start)."],
    )


def lgb_train():
    import lightgbm as lgb

    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state=0)
    params = {"objective": "binary", "metric": ["binary_logloss", "auc"], "learning_rate": 0.1,
              "num_leaves": 15, "min_data_in_leaf": 40, "seed": 0, "num_threads": 2}
    print("params:", params)
    dtrain = lgb.Dataset(Xtr, label=ytr)
    dvalid = lgb.Dataset(Xva, label=yva, reference=dtrain)
    record = {}
    bst = lgb.train(params, dtrain, num_boost_round=60, valid_sets=[dvalid],
                    callbacks=[lgb.log_evaluation(1), lgb.early_stopping(10), lgb.record_evaluation(record)])
    names = ["binary_logloss", "auc"]
    best = bst.best_iteration
    _truth.write(
        "lightgbm_train", framework="LightGBM (lgb.train)", packages=("lightgbm", "scikit-learn"),
        script="gbdt.py", args="lgb",
        step="boosting iteration, 1-based, printed as '[N]' at the start of the line",
        metrics={f"valid_0's {m}": [[i, f"{v:g}"] for i, v in enumerate(record["valid_0"][m], 1)]
                 + [[best, f"{record['valid_0'][m][best - 1]:g}"]] for m in names},
        printed_as={f"valid_0's {m}": f"valid_0's {m}: {{}}" for m in names},
        metric_lines={f"valid_0's {m}": "one \"[N]\\tvalid_0's binary_logloss: …\\tvalid_0's auc: …\" line per "
                                        "iteration (log_evaluation(1)); then the early-stopping callback repeats "
                                        "the best iteration's line once after 'Early stopping, best iteration "
                                        "is:' (the last entry here, a repeat, not a new observation)"
                      for m in names},
        recorded={f"valid_0's {m}": [[i, v] for i, v in enumerate(record["valid_0"][m], 1)] for m in names},
        params=params,
        not_metrics={
            "params: {'objective': 'binary', …}": "the script's params dict, printed once",
            "[LightGBM] [Info] Number of positive: 159, number of negative: 267":
                "LightGBM's dataset chatter ([LightGBM] [Info] …, name: value shaped)",
            "[LightGBM] [Info] [binary:BoostFromScore]: pavg=… -> initscore=…": "initial score, name=value shaped",
            "[LightGBM] [Info] Total Bins …": "dataset info",
            "[LightGBM] [Warning] No further splits with positive gain, best gain: -inf":
                "LightGBM's warning for a tree it could not split (min_data_in_leaf=40 on 426 rows), once a round",
            "the overhead of testing was 0.047137 seconds": "col-wise/row-wise auto-choice info",
            "Training until validation scores don't improve for 10 rounds": "early stopping banner",
        },
        notes=["The last entry of each metric is the repeated best-iteration line printed by early_stopping; "
               "record_evaluation has no such entry."],
    )


{"xgb_native": xgb_native, "xgb_sklearn": xgb_sklearn, "lgb": lgb_train}[MODE]()
