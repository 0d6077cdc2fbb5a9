"""Keras 3 (TensorFlow backend) model.fit on sklearn's digits, with validation data.

    python -u keras_fit.py 1 > ../logs/frameworks/keras_fit_verbose1.log 2>&1       # \\b…\\r redrawn bar, one per batch
    python -u keras_fit.py 2 > ../logs/frameworks/keras_fit_verbose2_val.log 2>&1   # one line per epoch
"""

import json
import sys
import time

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import _truth

VERBOSE = int(sys.argv[1])
config = {"learning_rate": 0.003, "batch_size": 128, "epochs": 5, "dropout": 0.2, "hidden": 64}
print(json.dumps(config))
keras.utils.set_random_seed(0)

X, y = load_digits(return_X_y=True)
Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.2, random_state=0)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(config["hidden"], activation="relu"),
                          keras.layers.Dropout(config["dropout"]), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.summary()


class Record(keras.callbacks.Callback):
    """Keeps the logs Keras hands to the callbacks (the progress bar gets the same dict) after each batch.
    In verbose 1 it also waits 60 ms a batch, longer than the bar's 50 ms redraw interval, so that every
    batch is drawn (as with any real model, whose batches take longer than that) and the log is stable."""

    def __init__(self):
        super().__init__()
        self.batches, self.test_batches = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((batch + 1, dict(logs)))
        if VERBOSE == 1:
            time.sleep(0.06)

    def on_test_batch_end(self, batch, logs=None):  # fit's validation passes too: only evaluate's are kept
        self.test_batches.append((batch + 1, dict(logs)))
        if VERBOSE == 1:
            time.sleep(0.06)


rec = Record()
hist = model.fit(Xtr, ytr, validation_data=(Xte, yte), batch_size=config["batch_size"], epochs=config["epochs"],
                 verbose=VERBOSE, callbacks=[rec])
train_batches, rec.test_batches = rec.batches, []
ev = model.evaluate(Xte, yte, batch_size=config["batch_size"], verbose=VERBOSE, callbacks=[rec], return_dict=True)
print(f"test loss {ev['loss']:.4f}, test accuracy {ev['accuracy']:.4f}")


def fmt(v):  # keras/src/utils/progbar.py: verbose 1 tests abs(v) > 1e-3, verbose 2 tests v > 1e-3
    return f"{v:.4f}" if (abs(v) if VERBOSE == 1 else v) > 1e-3 else f"{v:.4e}"


h = hist.history
steps_per_epoch = len(train_batches) // config["epochs"]
metrics, recorded, lines = {}, {}, {}
for k in h:  # accuracy, loss, val_accuracy, val_loss
    obs = []
    if VERBOSE == 1 and not k.startswith("val_"):
        for i, (b, logs) in enumerate(train_batches):
            e = i // steps_per_epoch + 1
            obs.append([[e, b], fmt(logs[k])])
            if b == steps_per_epoch:
                obs.append([[e, "epoch_end"], fmt(h[k][e - 1])])
    else:
        obs = [[[e, "epoch_end"], fmt(v)] for e, v in enumerate(h[k], 1)]
    metrics[k] = obs
    recorded[k] = [[e, v] for e, v in enumerate(h[k], 1)]
    if VERBOSE == 1:
        lines[k] = ("the progress bar, redrawn after every batch (\\b…\\r, no newline) with the running average "
                    "over the epoch so far ([epoch, batch]), then once more at the epoch end with the epoch's value "
                    "(== history, [epoch, 'epoch_end']) on the line that also carries the val_ metrics and ends in "
                    "\\n; the epoch-end value equals the last batch's running average"
                    if not k.startswith("val_") else
                    "only on the epoch-end bar line (after the train metrics): the validation pass draws no bar "
                    "during fit")
    else:
        lines[k] = "one 'N/N - 1s - 5ms/step - accuracy: … - loss: … - val_accuracy: … - val_loss: …' line per epoch"
for k in ("accuracy", "loss"):
    name = f"evaluate {k}"
    obs = [[["evaluate", b], fmt(logs[k])] for b, logs in rec.test_batches] if VERBOSE == 1 else []
    metrics[name] = obs + [[["evaluate", "end"], fmt(ev[k])]]
    recorded[name] = [[None, ev[k]]]
    lines[name] = (f"model.evaluate's bar, printed as '{k}: …' like the training value: "
                   + ("redrawn per batch with the running average, then the final value" if VERBOSE == 1 else
                      "one line with the final value"))
    metrics[f"test {k}"] = [[None, f"{ev[k]:.4f}"]]
    recorded[f"test {k}"] = [[None, ev[k]]]
    lines[f"test {k}"] = "the script's own last line 'test loss X, test accuracy Y'"

printed_as = {k: f"{k}: {{}}" for k in h}
printed_as.update({"evaluate accuracy": "accuracy: {}", "evaluate loss": "loss: {}",
                   "test accuracy": "test accuracy {}", "test loss": "test loss {}"})
for k in h:
    if not k.startswith("val_"):
        printed_as[k] = f"- {k}: {{}}"
_truth.write(
    f"keras_fit_verbose{VERBOSE}" + ("_val" if VERBOSE == 2 else ""),
    framework="Keras 3 (TensorFlow backend), model.fit(verbose=%d, validation_data=…)" % VERBOSE,
    packages=("keras", "tensorflow-cpu", "numpy", "scikit-learn"), script="keras_fit.py", args=str(VERBOSE),
    venv="tf",
    step=("[epoch, batch] for the per-batch bar redraws (batch 1-based within the epoch, printed as 'b/N'); "
          "[epoch, 'epoch_end'] for the epoch's final line; ['evaluate', …] for model.evaluate"
          if VERBOSE == 1 else "[epoch, 'epoch_end'] (epoch 1-based, from the 'Epoch e/5' line before); "
                               "['evaluate', 'end'] for model.evaluate"),
    metrics=metrics, printed_as=printed_as, metric_lines=lines, recorded=recorded,
    params=config,
    not_metrics={
        json.dumps(config): "the script's config, one JSON line at start (numbers, like a Katib JSON metrics line)",
        "Total params: 4,810 (18.79 KB) / Trainable params: … / Non-trainable params: 0 (0.00 B)":
            "model.summary()'s footer (and its table: Param # column)",
        "TF_ENABLE_ONEDNN_OPTS=0": "TensorFlow's oneDNN notice on stderr",
        "Epoch 1/5": "epoch counter lines",
        "12/12": "the bar's batch counter; '0s 20ms/step' the timing",
    },
    notes=["Values are Keras' running means over the epoch (the metric trackers' result()), formatted by "
           "keras/src/utils/progbar.py as '%.4f', or '%.4e' when at most 1e-3.",
           "Keras writes the bar with \\b (one per character of the previous bar) then \\r, and ANSI bold/colour "
           "codes, even into a file: it treats any POSIX process as a dynamic display."] if VERBOSE == 1 else
          ["Values are the epoch's means, formatted '%.4f' (or '%.4e' when at most 1e-3); the line starts "
           "with the batch counter 'N/N' and the timing."],
)
