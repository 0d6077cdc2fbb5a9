"""Hugging Face transformers Trainer on a tiny randomly initialised BERT and random token ids (nothing downloaded).

    /work/venvs/frameworks/bin/python -u hf_trainer.py > ../logs/frameworks/hf_trainer_v4.log 2>&1   # transformers 4.x
    /work/venvs/hf5/bin/python -u hf_trainer.py > ../logs/frameworks/hf_trainer_v5.log 2>&1          # transformers 5.x

The logging set-up and the final log_metrics/save-style summaries follow transformers' examples
(examples/pytorch/text-classification/run_glue.py): they log the TrainingArguments at start.
"""

import logging
import os
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import torch
import transformers
from transformers.trainer_pt_utils import metrics_format
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import _truth

MAJOR = int(transformers.__version__.split(".")[0])
logger = logging.getLogger(__name__)
logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                    handlers=[logging.StreamHandler(sys.stdout)])
logger.setLevel(logging.INFO)
transformers.utils.logging.set_verbosity_warning()


class RandomTokens(torch.utils.data.Dataset):
    """Random sequences of 16 token ids; the label says whether the first token is above 10, 20% of them flipped."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 20, (n, 16), generator=g)
        flip = torch.rand(n, generator=g) < 0.2
        self.labels = ((self.ids[:, 0] > 10) ^ flip).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": self.labels[i]}


def compute_metrics(p):
    return {"accuracy": float((np.argmax(p.predictions, axis=1) == p.label_ids).mean())}


args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=3, per_device_train_batch_size=16,
                         per_device_eval_batch_size=32, learning_rate=2e-3, logging_steps=4, eval_strategy="epoch",
                         save_strategy="no", report_to="none", seed=0)
logger.info(f"Training/evaluation parameters {args}")
config = BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=32, num_labels=2)
transformers.set_seed(0)
model = BertForSequenceClassification(config)
trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(256, 0), eval_dataset=RandomTokens(64, 1),
                  compute_metrics=compute_metrics)
train_result = trainer.train()
metrics = train_result.metrics
trainer.log_metrics("train", metrics)
eval_metrics = trainer.evaluate()
trainer.log_metrics("eval", eval_metrics)

# ---- truth: trainer.state.log_history, formatted as ProgressCallback.on_log prints it
history = trainer.state.log_history


def printed(k, v):
    if MAJOR >= 5:  # on_log: floats as f"{v:.4g}" strings; str(dict) quotes them
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return repr(round(v, 2) if k == "epoch" else v)  # v4: the floats themselves (epoch rounded to 2 places)


quote = "'" if MAJOR >= 5 else ""
obs, recorded, lines = {}, {}, {}
for entry in history:
    if "eval_loss" in entry and entry is history[-1]:
        continue  # the final trainer.evaluate() is logged but not printed (no training bar any more)
    for k, v in entry.items():
        if k in ("step", "total_flos", "epoch"):
            continue
        obs.setdefault(k, []).append([entry["step"], printed(k, v)])
        recorded.setdefault(k, []).append([entry["step"], v])
kinds = {"loss": "training", "grad_norm": "training", "learning_rate": "training"}
for k in obs:
    kind = kinds.get(k, "eval" if k.startswith("eval_") else "train summary")
    lines[k] = {
        "training": "the training dicts printed every logging_steps=4 steps: {'loss': …, 'grad_norm': …, "
                    "'learning_rate': …, 'epoch': …}",
        "eval": "the eval dict printed after each epoch's evaluation: {'eval_loss': …, 'eval_accuracy': …, "
                "'eval_runtime': …, 'eval_samples_per_second': …, 'eval_steps_per_second': …, 'epoch': …}",
        "train summary": "the one train-summary dict at the end of train(): {'train_runtime': …, "
                         "'train_samples_per_second': …, 'train_steps_per_second': …, 'train_loss': …, 'epoch': …}",
    }[kind]
printed_as = {k: f"'{k}': {quote}{{}}{quote}" for k in obs}

# the '***** train metrics *****' / '***** eval metrics *****' blocks of trainer.log_metrics
for split, m in (("train", metrics), ("eval", eval_metrics)):
    fm = metrics_format(m)
    kw, vw = max(len(str(x)) for x in fm), max(len(str(x)) for x in fm.values())
    for k, v in fm.items():
        if k in ("epoch", "total_flos"):
            continue
        key = f"log_metrics {split} {k}"
        obs[key] = [[None, str(v)]]
        recorded[key] = [[None, m[k]]]
        printed_as[key] = f"  {k:<{kw}} = {{:>{vw}}}"
        lines[key] = (f"trainer.log_metrics('{split}'): the '***** {split} metrics *****' block, one "
                      f"'  {k} = value' line (name padded, value right-aligned; floats rounded to 4 places, "
                      "runtimes as h:mm:ss.ss)")

_truth.write(
    f"hf_trainer_v{MAJOR}", framework=f"Hugging Face transformers Trainer (v{MAJOR})",
    packages=("transformers", "torch", "accelerate", "tqdm", "numpy"), script="hf_trainer.py",
    venv="frameworks" if MAJOR == 4 else "hf5",
    step="the global step of trainer.state.log_history ('step'; not printed in the dicts, which carry 'epoch' "
         "as a fraction); none for the log_metrics blocks",
    metrics=obs, printed_as=printed_as, metric_lines=lines, recorded=recorded,
    params={k: getattr(args, k) for k in ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                                          "per_device_eval_batch_size", "logging_steps", "seed")},
    not_metrics={
        "Training/evaluation parameters TrainingArguments(\\n_n_gpu=0,\\n…learning_rate=0.002,\\n…)":
            "the script logs its TrainingArguments once (as run_glue.py does): ~100 'name=value,' lines "
            "(learning_rate=0.002, num_train_epochs=3, …)",
        "'epoch': …": "in every dict: the fractional epoch, a step counter, not a metric",
        "  epoch                    =        3.0": "the epoch line of each log_metrics block",
        "  total_flos               =        0GF": "log_metrics' floating-point-operation count (not a metric; "
                                                   "on_log drops it from the train-summary dict)",
    },
    notes=[("v4 prints the log dict itself: str(dict) of floats (the loss is already rounded to 4 places by the "
            "Trainer, eval values are full precision, epoch rounded to 2 places)." if MAJOR == 4 else
            "v5 prints every float as a '%.4g' string: {'loss': '0.6931', 'grad_norm': '1.234', "
            "'learning_rate': '0.0009583', 'epoch': '0.25'}; log_history keeps the floats."),
           "The dicts are written with tqdm.write between redraws of the training bar (stderr, \\r redraws); "
           "the evaluation bar is a second tqdm bar.",
           "trainer.evaluate() after training logs its dict into log_history but prints nothing itself: the "
           "script's log_metrics('eval') block shows it."],
)
