#!/usr/bin/env bash
# Re-record every log in ../logs that has a truth file, then check the truth files against the logs.
# Needs the venvs of README.md under $VENVS (default /work/venvs).
set -euo pipefail
cd "$(dirname "$0")"
V=${VENVS:-/work/venvs}
F=$V/frameworks/bin/python
run() { local py=$1 name=$2; shift 2; echo "recording $name"; "$py" -u "$@" > "../logs/frameworks/$name.log" 2>&1; }

run "$F" torch_epoch_colon     torch_loops.py colon
run "$F" torch_cifar_tutorial  torch_loops.py cifar
run "$F" torch_katib_mnist     torch_loops.py katib --lr 0.05 --momentum 0.9
run "$F" katib_kv_line         torch_loops.py kv
run "$F" xgboost_train_early_stop   gbdt.py xgb_native
run "$F" xgboost_sklearn_classifier gbdt.py xgb_sklearn
run "$F" lightgbm_train        gbdt.py lgb
run "$F" sklearn_sgd_classifier sklearn_sgd.py
run "$V/tf/bin/python" keras_fit_verbose1     keras_fit.py 1
run "$V/tf/bin/python" keras_fit_verbose2_val keras_fit.py 2
run "$F" lightning_tqdm        lightning_fit.py tqdm
run "$V/lightning-rich/bin/python" lightning_rich lightning_fit.py rich
echo "recording lightning_rich_tty"
script -q -e -c "stty cols 120 rows 40; $V/lightning-rich/bin/python -u lightning_fit.py rich" /dev/null \
    > ../logs/frameworks/lightning_rich_tty.log
run "$F" hf_trainer_v4         hf_trainer.py
run "$V/hf5/bin/python" hf_trainer_v5 hf_trainer.py
"$F" check_truth.py
