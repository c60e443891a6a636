"""Stand-in written for these tests that mimics the interface of kuangliu/pytorch-cifar's
main.py (no code of that repo), with a tiny model so that an epoch takes a moment on a CPU.

Mimicked, because recipes/pytorch-cifar.yaml relies on it: the flags (--lr, and
--resume/-r), CIFAR-10 read from ./data/cifar-10-batches-py relative to the working folder,
utils.py's progress bar (which needs a terminal), ./checkpoint/ckpt.pth (net, acc, epoch)
written only when the test accuracy beats the best so far, --resume asserting that ./checkpoint
exists and going on from the saved epoch and accuracy, and 200 epochs from the start epoch with
a cosine learning rate. Its "==> ..." and "Epoch: N" lines are the repo's.
"""

import argparse
import os
import pickle
import time

import numpy as np
import torch
from models import SimpleDLA
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from utils import progress_bar

CKPT_DIR = "checkpoint"
CKPT_FILE = os.path.join(".", CKPT_DIR, "ckpt.pth")
EPOCHS = 200
# per-channel mean and spread of CIFAR-10's training images, on a 0..1 scale
CHANNEL_MEAN = (0.4914, 0.4822, 0.4465)
CHANNEL_STD = (0.2023, 0.1994, 0.2010)


def read_cifar(root, train):
    """One split of CIFAR-10's python version as a dataset of normalised tensors.

    STAND-IN: the repo uses torchvision.datasets.CIFAR10 (not installed here), which reads the
    same folder and pickled batches but also checks md5 sums and can download; its training
    transform also crops and flips at random."""
    folder = os.path.join(root, "cifar-10-batches-py")
    if not os.path.isdir(folder):
        raise RuntimeError(f"no CIFAR-10 at {folder} (this stand-in does not download)")
    names = [f"data_batch_{n}" for n in range(1, 6)] if train else ["test_batch"]
    rows, labels = [], []
    for name in names:
        with open(os.path.join(folder, name), "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        rows.append(np.asarray(batch["data"], dtype=np.uint8))
        labels += list(batch["labels"])
    images = torch.from_numpy(np.concatenate(rows)).float().div(255).view(-1, 3, 32, 32)
    mean = torch.tensor(CHANNEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CHANNEL_STD).view(1, 3, 1, 1)
    return TensorDataset((images - mean) / std, torch.tensor(labels))


def summary(loss_sum, batches, right, seen):
    return f"Loss: {loss_sum / batches:.3f} | Acc: {100.0 * right / seen:.3f}% ({right}/{seen})"


class Trainer:
    def __init__(self, lr, device):
        self.device = device
        self.net = SimpleDLA().to(device)
        if device == "cuda":
            self.net = nn.DataParallel(self.net)
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4
        )
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=EPOCHS)
        self.best_acc = 0.0
        self.first_epoch = 0

    def resume(self):
        print("==> Resuming from checkpoint..")
        assert os.path.isdir(CKPT_DIR), "Error: no checkpoint directory found!"
        state = torch.load(CKPT_FILE)
        self.net.load_state_dict(state["net"])
        self.best_acc = state["acc"]
        self.first_epoch = state["epoch"]

    def _pass(self, loader, learn):
        """One pass over ``loader``; the number of right answers and of examples."""
        self.net.train(learn)
        loss_sum, right, seen = 0.0, 0, 0
        with torch.set_grad_enabled(learn):
            for step, (images, labels) in enumerate(loader):
                images, labels = images.to(self.device), labels.to(self.device)
                scores = self.net(images)
                loss = self.loss_fn(scores, labels)
                if learn:
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                loss_sum += loss.item()
                right += (scores.argmax(1) == labels).sum().item()
                seen += labels.numel()
                progress_bar(step, len(loader), summary(loss_sum, step + 1, right, seen))
        return right, seen

    def train_epoch(self, epoch, loader):
        print(f"\nEpoch: {epoch}")
        self._pass(loader, learn=True)

    def test_epoch(self, epoch, loader):
        right, seen = self._pass(loader, learn=False)
        acc = 100.0 * right / seen
        if acc <= self.best_acc:
            return
        print("Saving..")
        os.makedirs(CKPT_DIR, exist_ok=True)
        torch.save({"net": self.net.state_dict(), "acc": acc, "epoch": epoch}, CKPT_FILE)
        self.best_acc = acc
        # STAND-IN: a test that kills this run at a known point sets this; the repo's main.py
        # goes straight on. Not after epoch 0: resuming from it is the same as starting afresh.
        pause = os.environ.get("STANDIN_HOLD_AFTER_SAVE")
        if pause and epoch > 0:
            print(f"stand-in: holding after saving epoch {epoch}", flush=True)
            time.sleep(float(pause))


def main():
    parser = argparse.ArgumentParser(description="stand-in CIFAR-10 training")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
    parser.add_argument("--resume", "-r", action="store_true", help="resume from checkpoint")
    args = parser.parse_args()

    torch.manual_seed(0)  # STAND-IN: the repo does not seed; these runs are repeatable
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("==> Preparing data..")
    # STAND-IN: the repo loads with two worker processes, which cost more than these batches
    train_loader = DataLoader(read_cifar("./data", train=True), batch_size=128, shuffle=True)
    test_loader = DataLoader(read_cifar("./data", train=False), batch_size=100)

    print("==> Building model..")
    trainer = Trainer(args.lr, device)
    if args.resume:
        trainer.resume()

    for epoch in range(trainer.first_epoch, trainer.first_epoch + EPOCHS):
        trainer.train_epoch(epoch, train_loader)
        trainer.test_epoch(epoch, test_loader)
        trainer.schedule.step()


if __name__ == "__main__":
    main()
