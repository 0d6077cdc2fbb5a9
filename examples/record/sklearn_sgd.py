"""scikit-learn's SGDClassifier(verbose=1): the per-epoch blocks its Cython loop prints.

    python -u sklearn_sgd.py > ../logs/frameworks/sklearn_sgd_classifier.log 2>&1
"""

import sklearn
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import _truth

X, y = load_breast_cancer(return_X_y=True)
Xtr, Xte, ytr, yte = train_test_split(StandardScaler().fit_transform(X), y, test_size=0.25, random_state=0)
clf = SGDClassifier(loss="log_loss", alpha=1e-3, max_iter=30, tol=1e-4, n_iter_no_change=3, random_state=0, verbose=1)
print(clf)
clf.fit(Xtr, ytr)
acc = clf.score(Xte, yte)
print(f"test accuracy: {acc:.4f}")

_truth.write(
    "sklearn_sgd_classifier", framework="scikit-learn (SGDClassifier, verbose=1)",
    packages=("scikit-learn", "numpy"), script="sklearn_sgd.py",
    step="epoch, printed as '-- Epoch N' on the line before the values",
    metrics={"test accuracy": [[None, f"{acc:.4f}"]]},
    printed_as={"test accuracy": "test accuracy: {}"},
    metric_lines={"test accuracy": "the script's last line (clf.score on the held-out quarter)"},
    recorded={"n_iter_": clf.n_iter_, "t_": clf.t_, "test accuracy": [[None, acc]]},
    params=clf.get_params(),
    not_metrics={"SGDClassifier(alpha=0.001, loss='log_loss', max_iter=30, n_iter_no_change=3, random_state=0, "
                 "tol=0.0001, verbose=1)": "print(clf) before fit: the estimator repr (non-default params)"},
    notes=[
        "The training process keeps none of the printed per-epoch values, so 'metrics' lists only the script's "
        "own final line; the per-epoch values are described under 'printed_values'.",
        "The epoch blocks are printed from sklearn's Cython loop with Python's print (under the GIL), in order "
        "with the script's own lines. One block per epoch (binary problem: one weight vector; a multi-class "
        "problem prints one block per class and epoch, one-vs-rest). With early_stopping=True the values line "
        "also ends in ', Validation score: %f'.",
    ],
    extra={"printed_values": {
        "Avg. loss": "mean data loss (log_loss) over the epoch's samples, printed '%f': the per-epoch "
                     "training loss a collector could report",
        "Objective": "mean of loss plus penalty over the epoch's samples, printed '%f' (what tol is tested on)",
        "Norm": "L2 norm of the weight vector after the epoch (a diagnostic, not a metric)",
        "NNZs": "count of non-zero weights (not a metric)",
        "Bias": "the intercept after the epoch (not a metric)",
        "T": "number of samples seen so far, cumulative over epochs (a counter, not a metric)",
        "Total training time": "seconds, wall clock (not a metric)",
        "Convergence after N epochs took S seconds": f"the last block: N == n_iter_ == {clf.n_iter_}",
    }},
)
