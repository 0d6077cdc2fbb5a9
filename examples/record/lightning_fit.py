"""PyTorch Lightning Trainer.fit, then trainer.validate and trainer.test, on sklearn's digits.

    python -u lightning_fit.py tqdm > ../logs/frameworks/lightning_tqdm.log 2>&1   # venv without rich: TQDMProgressBar, plain tables
    python -u lightning_fit.py rich > ../logs/frameworks/lightning_rich.log 2>&1   # venv with rich: RichProgressBar, rich tables
    script -q -e -c "stty cols 120 rows 40; python -u lightning_fit.py rich" /dev/null > ../logs/frameworks/lightning_rich_tty.log
                                                                        # the same on a terminal (a pty)
"""

import os
import sys
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import _truth

MODE = sys.argv[1]
TTY = sys.stdout.isatty()
NAME = f"lightning_{MODE}" + ("_tty" if TTY else "")
L.seed_everything(0)
X, y = load_digits(return_X_y=True)
Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.2, random_state=0)
Xtr, Xva, ytr, yva = train_test_split(Xtr, ytr, test_size=0.2, random_state=0)
ds = lambda a, b: TensorDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b))


class DigitsMLP(L.LightningModule):
    def __init__(self, lr=0.01, hidden=32, batch_size=64):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def _eval(self, batch, prefix):
        x, y = batch
        logits = self(x)
        self.log(f"{prefix}_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log(f"{prefix}_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class Record(L.Callback):
    """Snapshots of what the training process logged: the progress-bar metrics after every training batch
    (what the bar is given), and the callback metrics at every epoch end."""

    def __init__(self):
        self.steps, self.epochs = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.current_epoch, batch_idx + 1, dict(trainer.progress_bar_metrics)))

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append((trainer.current_epoch, {k: v.item() for k, v in trainer.callback_metrics.items()}))


class Slow(L.Callback):
    """On a terminal, rich draws from a 10 Hz refresh thread: 150 ms a batch lets it draw every batch (as it
    would for any real model), so that the recording is stable."""

    def on_train_batch_end(self, *args):
        time.sleep(0.15)


model = DigitsMLP()
print(model.hparams)
bar = L.pytorch.callbacks.RichProgressBar() if MODE == "rich" else L.pytorch.callbacks.TQDMProgressBar()
rec = Record()
root = tempfile.mkdtemp()  # a fresh lightning_logs/ so the version (v_num) is 0
trainer = L.Trainer(max_epochs=4, callbacks=[bar, rec] + ([Slow()] if TTY else []), default_root_dir=root, deterministic=True,
                    enable_checkpointing=False)
bs = model.hparams.batch_size
trainer.fit(model, DataLoader(ds(Xtr, ytr), batch_size=bs, shuffle=True), DataLoader(ds(Xva, yva), batch_size=bs))
val = trainer.validate(model, DataLoader(ds(Xva, yva), batch_size=bs))
test = trainer.test(model, DataLoader(ds(Xte, yte), batch_size=bs))


def tqdm_num(v):  # Lightning's Tqdm.format_num: tqdm's '{:.3g}' padded with zeros to 5 characters ('2.320')
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    return Tqdm.format_num(v)


def rich_num(v):  # RichProgressBar's MetricsTextColumn: metrics_format ".3f"
    return f"{v:.3f}"


fmt, sep = (rich_num, ": ") if MODE == "rich" else (tqdm_num, "=")
metrics, recorded, lines, printed_as = {}, {}, {}, {}
# per training step: train_loss_step; the bar also carries the last epoch's train_loss_epoch, val_loss, val_acc
metrics["train_loss_step"] = [[[e, b], fmt(m["train_loss_step"])] for e, b, m in rec.steps]
recorded["train_loss_step"] = [[[e, b], m["train_loss_step"]] for e, b, m in rec.steps]
for k in ("val_loss", "val_acc", "train_loss_epoch", "train_acc"):
    recorded[k] = [[e, m[k]] for e, m in rec.epochs]
    if k != "train_acc":
        metrics[k] = [[e, fmt(m[k])] for e, m in rec.epochs]
for k in metrics:
    printed_as[k] = k + sep + "{}"
where = "the bar's postfix" if MODE == "tqdm" else "the metrics column right of the bar"
lines["train_loss_step"] = (f"{where} ('train_loss_step{sep}…'), redrawn after every training batch "
                            "([epoch 0-based, batch 1-based]); logged with self.log(prog_bar=True, on_step=True)")
for k in ("val_loss", "val_acc"):
    lines[k] = (f"{where} after each validation run ([epoch]); it stays on every later redraw until the next "
                "validation")
lines["train_loss_epoch"] = f"{where} from the end of each epoch on (the epoch mean of train_loss)"
if MODE == "rich" and not TTY:  # only the last frame is printed, wrapped at 80 columns
    for k in list(metrics):
        metrics[k] = metrics[k][-1:]
        printed_as[k] = "{}"
        lines[k] = ("only the training bar's final frame, printed once when fit ends: the metrics column is "
                    "wrapped to the 80 columns rich assumes for a file, so a name ('train_loss_step: ') and its "
                    "value can be on different lines; the last value only")
for name, res in (("validate", val[0]), ("test", test[0])):
    for k, v in res.items():
        key = f"{name} table {k}"
        recorded[key] = [[None, v]]
        metrics[key] = [[None, str(v)]]  # the table prints str() of the float
        printed_as[key] = "{}"
        lines[key] = (f"trainer.{name}()'s results table ('{'Validate' if name == 'validate' else 'Test'} metric' "
                      f"| 'DataLoader 0'), the row '{k}'; the value is str() of the float, padded in its column")
lines["train_acc"] = "logged with prog_bar=False: not printed anywhere (recorded only)"

_truth.write(
    NAME,
    framework=f"PyTorch Lightning ({'RichProgressBar' if MODE == 'rich' else 'default TQDMProgressBar'})",
    packages=("lightning", "torch", "tqdm", "rich", "scikit-learn"), script="lightning_fit.py", args=MODE,
    venv="lightning-rich" if MODE == "rich" else "frameworks",
    command=('cd examples/record && script -q -e -c "stty cols 120 rows 40; /work/venvs/lightning-rich/bin/python '
             '-u lightning_fit.py rich" /dev/null > ../logs/frameworks/lightning_rich_tty.log') if TTY else None,
    step="[epoch (0-based, as in 'Epoch 0:'), batch (1-based, as in '12/18')] for step values; epoch for "
         "epoch values; none for the tables",
    metrics=metrics, printed_as=printed_as, metric_lines=lines, recorded=recorded,
    params=dict(model.hparams) | {"max_epochs": 4},
    not_metrics={
        "v_num=0" if MODE == "tqdm" else "v_num: 0.000": "the logger's version number, in the bar with the metrics",
        '"batch_size": 64 / "hidden": 32 / "lr": 0.01': "print(model.hparams): the script prints the hparams "
                                                         "once, one '\"name\": value' line each",
        "GPU available: False, used: False / TPU available: False, using: 0 TPU cores":
            "Trainer start-up notices",
        "Total params / Trainable params / Total estimated model params size (MB) / Modules in train mode":
            "the model summary table printed by fit",
        "`num_workers=1`": "the dataloader-workers warning ('Consider increasing the value of the `num_workers` "
                           "argument` to `num_workers=1`')",
        "Seed set to 0": "seed_everything's notice",
        "`Trainer.fit` stopped: `max_epochs=4` reached.": "fit's closing notice",
        "Trainer(log_every_n_steps=50)": "warning: fewer training batches (18) than the logging interval",
    },
    notes=(["Lightning's TQDMProgressBar writes to stdout with \\r redraws (tqdm does not check for a "
            "terminal); the bar is refreshed twice per batch (the new count, then the new postfix).",
            "Without rich installed, trainer.validate/test print a plain-text table of ─ rules; this venv "
            "has no rich (lightning does not require it)."] if MODE == "tqdm" else
           (["Recorded on a pseudo-terminal (util-linux script, 120x40): rich redraws the live display in place "
             "with ESC[2K (erase line) and ESC[1A (cursor up), colours on, and the pty turns every \\n into "
             "\\r\\n. The metrics column wraps onto two more lines once val_ metrics join it.",
             "A 150 ms sleep per batch (callback Slow) lets rich's 10 Hz refresh thread draw every batch."]
            if TTY else
            ["RichProgressBar renders through rich.live: with stdout not a terminal, rich prints nothing while "
             "the bars run and only their final frame when each progress stops (after fit's closing notice)."])
           + ["With rich installed, the model summary and the validate/test results are rich tables "
              "(box-drawing characters)."]),
)
