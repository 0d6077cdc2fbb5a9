"""Plain PyTorch training loops on sklearn's digits, in three print styles.

    python -u torch_loops.py colon   > ../logs/frameworks/torch_epoch_colon.log 2>&1     # epoch 1: loss: 0.6931 accuracy: 0.51
    python -u torch_loops.py cifar   > ../logs/frameworks/torch_cifar_tutorial.log 2>&1  # [1,    50] loss: 2.187
    python -u torch_loops.py katib --lr 0.05 --momentum 0.9 > ../logs/frameworks/torch_katib_mnist.log 2>&1
                                                                             # {metricName: accuracy, metricValue: 0.9803}
    python -u torch_loops.py kv      > ../logs/frameworks/katib_kv_line.log 2>&1         # epoch=1 loss=0.3012 accuracy=0.9101
"""

import argparse
import logging
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

import _truth

MODE = sys.argv[1]
sys.argv = sys.argv[:1] + sys.argv[2:]
torch.manual_seed(0)

X, y = load_digits(return_X_y=True)
Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.2, random_state=0)
t = lambda a, dt=torch.float32: torch.tensor(a, dtype=dt)
train_ds = TensorDataset(t(Xtr), t(ytr, torch.long))
test_ds = TensorDataset(t(Xte), t(yte, torch.long))
PKGS = ("torch", "scikit-learn", "numpy")


def mlp():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def evaluate(model, loader):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for xb, yb in loader:
            out = model(xb)
            loss += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    model.train()
    return loss / len(loader.dataset), correct / len(loader.dataset)


def colon():
    """The common hand-written loop: print the config, the model, then one `name: value` line per epoch."""
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(args)
    model = mlp()
    print(model)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_ds, batch_size=256)
    rec = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    for epoch in range(1, args.epochs + 1):
        total, correct, n = 0.0, 0, 0
        for xb, yb in loader:
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            n += len(yb)
        vals = {"loss": total / n, "accuracy": correct / n}
        vals["val_loss"], vals["val_accuracy"] = evaluate(model, test_loader)
        fmt = {"loss": "{:.4f}", "accuracy": "{:.2f}", "val_loss": "{:.4f}", "val_accuracy": "{:.2f}"}
        text = {k: fmt[k].format(v) for k, v in vals.items()}
        print(f"epoch {epoch}: loss: {text['loss']} accuracy: {text['accuracy']} "
              f"val_loss: {text['val_loss']} val_accuracy: {text['val_accuracy']}")
        for k in rec:
            rec[k].append((epoch, text[k], vals[k]))
    print("Finished Training")
    _truth.write(
        "torch_epoch_colon", framework="PyTorch (plain loop)", packages=PKGS, script="torch_loops.py", args="colon",
        step="epoch (1-based), printed as 'epoch N:' at the start of the line",
        metrics={k: [[e, s] for e, s, _ in v] for k, v in rec.items()},
        printed_as={k: k + ": {}" for k in rec},
        metric_lines={k: "one 'epoch N: loss: … accuracy: … val_loss: … val_accuracy: …' line per epoch" for k in rec},
        recorded={k: [[e, x] for e, _, x in v] for k, v in rec.items()},
        params=vars(args),
        not_metrics={
            "Namespace(batch_size=64, epochs=8, lr=0.01, momentum=0.9, seed=0)":
                "the script prints its argparse config once at start (params, not metrics)",
            "in_features=64, out_features=32, bias=True / p=0.2, inplace=False":
                "print(model): the module repr of Linear and Dropout layers",
            "epoch": "the step counter ('epoch 1:'), not a metric",
        },
        notes=["Config line and module repr are printed by the script itself (print(args); print(model)), "
               "as hand-written training scripts commonly do."],
    )


def cifar():
    """The official 'Training a classifier' (CIFAR-10) tutorial's loop and prints, on digits with batch 4."""
    every = 50
    trainloader = DataLoader(train_ds, batch_size=4, shuffle=True)
    testloader = DataLoader(test_ds, batch_size=4, shuffle=False)
    classes = tuple(str(c) for c in range(10))
    net = mlp()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001 * 10, momentum=0.9)
    losses = []
    for epoch in range(2):  # loop over the dataset multiple times
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % every == every - 1:  # print every 50 mini-batches (the tutorial: 2000)
                print(f'[{epoch + 1}, {i + 1:5d}] loss: {running_loss / every:.3f}')
                losses.append(([epoch + 1, i + 1], f"{running_loss / every:.3f}", running_loss / every))
                running_loss = 0.0
    print('Finished Training')

    net.eval()
    correct = total = 0
    correct_pred = {c: 0 for c in classes}
    total_pred = {c: 0 for c in classes}
    with torch.no_grad():
        for images, labels in testloader:
            outputs = net(images)
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
            for label, prediction in zip(labels, predicted):
                if label == prediction:
                    correct_pred[classes[label]] += 1
                total_pred[classes[label]] += 1
    print(f'Accuracy of the network on the {total} test images: {100 * correct // total} %')
    per_class = []
    for classname, correct_count in correct_pred.items():
        accuracy = 100 * float(correct_count) / total_pred[classname]
        print(f'Accuracy for class: {classname:5s} is {accuracy:.1f} %')
        per_class.append((classname, f"{accuracy:.1f}", accuracy))

    metrics = {"loss": [[s, x] for s, x, _ in losses],
               "accuracy": [[None, str(100 * correct // total)]]}
    printed_as = {"loss": "] loss: {}", "accuracy": f"on the {total} test images: {{}} %"}
    lines = {"loss": "'[epoch, batch] loss: X' every 50 mini-batches: the mean loss over those 50 batches",
             "accuracy": f"'Accuracy of the network on the {total} test images: N %' once at the end (integer percent)"}
    for c, s, _ in per_class:
        metrics[f"accuracy_class_{c}"] = [[None, s]]
        printed_as[f"accuracy_class_{c}"] = f"Accuracy for class: {c:5s} is {{}} %"
        lines[f"accuracy_class_{c}"] = f"'Accuracy for class: {c:5s} is X %' once at the end (percent)"
    _truth.write(
        "torch_cifar_tutorial", framework="PyTorch (plain loop, CIFAR-10 tutorial format)", packages=PKGS,
        script="torch_loops.py", args="cifar",
        step="loss: [epoch, batch] as printed in '[1,    50]' (1-based); the end-of-run accuracies have none (null)",
        metrics=metrics, printed_as=printed_as, metric_lines=lines,
        recorded={"loss": [[s, x] for s, _, x in losses], "accuracy": [[None, correct / total]],
                  **{f"accuracy_class_{c}": [[None, x]] for c, _, x in per_class}},
        params={"batch_size": 4, "lr": 0.01, "momentum": 0.9, "epochs": 2, "print_every": every},
        not_metrics={"[1,    50]": "the [epoch, mini-batch] step prefix of each loss line"},
        notes=["Same statements as the tutorial (pytorch.org/tutorials/beginner/blitz/cifar10_tutorial), with "
               "digits for CIFAR-10, a small MLP for its CNN, lr 0.01 and printing every 50 batches instead of "
               "2000. The script prints no config line: the tutorial does not. The per-class lines name the "
               "class ('0'..'9' here, 'plane', 'car', … in the tutorial); whether a collector wants them is a "
               "choice, they are listed here as accuracy_class_<c>."],
    )


class Net(nn.Module):
    """Katib's pytorch-mnist Net, unchanged (it expects 28x28 inputs: digits are upscaled from 8x8)."""

    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2, 2)
        x = x.view(-1, 4 * 4 * 50)
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def katib():
    """kubeflow/katib examples/v1beta1/trial-images/pytorch-mnist/mnist.py's train/test prints and logging setup."""
    p = argparse.ArgumentParser(description="PyTorch MNIST Example")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--test-batch-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--no-cuda", action="store_true", default=False)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=10)
    args = p.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)-8s %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ",
                        level=logging.DEBUG)
    logging.info("hyperparameters: %s", args)  # not in Katib's script: added as a config echo
    torch.manual_seed(args.seed)
    up = lambda ds: TensorDataset(F.interpolate(ds.tensors[0].view(-1, 1, 8, 8), size=28, mode="bilinear"),
                                  ds.tensors[1])
    train_loader = DataLoader(up(train_ds), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(up(test_ds), batch_size=args.test_batch_size, shuffle=False)
    model = Net()
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    rec = {"accuracy": [], "loss": [], "train_loss": []}
    for epoch in range(1, args.epochs + 1):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                msg = "Train Epoch: {} [{}/{} ({:.0f}%)]\tloss={:.4f}".format(
                    epoch, batch_idx * len(data), len(train_loader.dataset),
                    100.0 * batch_idx / len(train_loader), loss.item())
                logging.info(msg)
                rec["train_loss"].append(([epoch, batch_idx], "{:.4f}".format(loss.item()), loss.item()))
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction="sum").item()
                pred = output.max(1, keepdim=True)[1]
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        test_accuracy = float(correct) / len(test_loader.dataset)
        logging.info("{{metricName: accuracy, metricValue: {:.4f}}};"
                     "{{metricName: loss, metricValue: {:.4f}}}\n".format(test_accuracy, test_loss))
        rec["accuracy"].append((epoch, "{:.4f}".format(test_accuracy), test_accuracy))
        rec["loss"].append((epoch, "{:.4f}".format(test_loss), test_loss))
    _truth.write(
        "torch_katib_mnist", framework="PyTorch (Katib pytorch-mnist trial format)", packages=PKGS,
        script="torch_loops.py", args="katib --lr 0.05 --momentum 0.9",
        step="accuracy, loss: epoch (1-based, not printed on the line); train_loss: [epoch, batch_idx] from "
             "'Train Epoch: E [batch_idx*64/1437 …]'",
        metrics={k: [[s, x] for s, x, _ in v] for k, v in rec.items()},
        printed_as={"accuracy": "{{metricName: accuracy, metricValue: {}}}",
                    "loss": "{{metricName: loss, metricValue: {}}}", "train_loss": "\tloss={}"},
        metric_lines={
            "accuracy": "'{metricName: accuracy, metricValue: X};{metricName: loss, metricValue: Y}' once per "
                        "epoch (test set), followed by an empty line (the message ends in \\n)",
            "loss": "the same per-epoch test line: the test loss (Katib's objective format)",
            "train_loss": "'Train Epoch: E [n/N (p%)]\\tloss=X' every 10 batches: the batch's training loss, "
                          "printed as 'loss=' (a Katib default-format name=value pair; the same name as the "
                          "test 'loss' above)",
        },
        recorded={k: [[s, x] for s, _, x in v] for k, v in rec.items()},
        params=vars(args),
        not_metrics={
            f"hyperparameters: {args}": "config echo at start (added to Katib's script)",
            "2026-…T…Z": "each line starts with the logging asctime (Katib's %Y-%m-%dT%H:%M:%SZ format)",
        },
        notes=["Katib's mnist.py (read at commit 0c15b3a7 of kubeflow/katib) logs no hyperparameters; the "
               "'hyperparameters: Namespace(...)' line is added here as a typical config echo.",
               "Digits (8x8) upscaled to 28x28 replace FashionMNIST so Katib's Net runs unchanged; 3 epochs; "
               "lr and momentum are passed on the command line as a Katib trial template does.",
               "Katib's own collector, with its default filter, reads 'loss=X' from the Train Epoch lines; with "
               "the metricsFormat '{metricName: ([\\w|-]+), metricValue: ((-?\\d+)(\\.\\d+)?)}' of its "
               "file-metrics-collector example it reads the per-epoch test line."],
    )


def kv():
    """Katib's default file format: name=value pairs, here all of an epoch on one line, after a config line."""
    cfg = {"lr": 0.01, "batch_size": 64, "max_epochs": 6, "hidden": 32, "dropout": 0.2}
    print(" ".join(f"{k}={v}" for k, v in cfg.items()))
    model = mlp()
    opt = optim.Adam(model.parameters(), lr=cfg["lr"])
    loader = DataLoader(train_ds, batch_size=cfg["batch_size"], shuffle=True)
    test_loader = DataLoader(test_ds, batch_size=256)
    names = ("loss", "accuracy", "val_loss", "val_accuracy")
    rec = {k: [] for k in names}
    for epoch in range(1, cfg["max_epochs"] + 1):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        vals = dict(zip(names, evaluate(model, loader) + evaluate(model, test_loader)))
        print(f"epoch={epoch} " + " ".join(f"{k}={vals[k]:.4f}" for k in names))
        for k in names:
            rec[k].append((epoch, f"{vals[k]:.4f}", vals[k]))
    _truth.write(
        "katib_kv_line", framework="PyTorch (plain loop, Katib default name=value format)", packages=PKGS,
        script="torch_loops.py", args="kv",
        step="epoch, printed as the line's first pair 'epoch=N'",
        metrics={k: [[e, s] for e, s, _ in v] for k, v in rec.items()},
        printed_as={k: " " + k + "={}" for k in names},
        metric_lines={k: "one 'epoch=N loss=… accuracy=… val_loss=… val_accuracy=…' line per epoch "
                         "(loss/accuracy: the train set evaluated after the epoch)" for k in names},
        recorded={k: [[e, x] for e, _, x in v] for k, v in rec.items()},
        params=cfg,
        not_metrics={"lr=0.01 batch_size=64 max_epochs=6 hidden=32 dropout=0.2":
                         "the first line: the config in the same name=value shape as the metrics, printed once",
                     "epoch=N": "the step counter, in the same name=value shape, on every metric line"},
        notes=["The config line is printed by the script; Katib's default filter takes every name=value pair, "
               "so Katib itself would report lr, batch_size, … and epoch as metrics if they were named in the "
               "experiment's objective."],
    )


{"colon": colon, "cifar": cifar, "katib": katib, "kv": kv}[MODE]()
