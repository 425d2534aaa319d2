"""ML inference: a small DNN (scikit-learn MLP) on the handwritten digits bundled with scikit-learn.

prepare trains it and saves the model to /tmp; run loads the model from /tmp and classifies the
test set many times over (inference is what the function serves).
Usage: ml.py prepare DIR | ml.py run DIR ROUNDS
"""
import json
import os
import pickle
import sys
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier


def split():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.3, random_state=0)


def prepare(d):
    x_train, x_test, y_train, y_test = split()
    model = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=60, random_state=0)
    model.fit(x_train, y_train)
    with open(os.path.join(d, "model.pkl"), "wb") as f:
        pickle.dump(model, f)
    with open(os.path.join(d, "test.pkl"), "wb") as f:
        pickle.dump((x_test, y_test), f)
    print(json.dumps({"bytes": os.path.getsize(os.path.join(d, "model.pkl"))}))


def run(d, rounds):
    t0 = time.monotonic()
    with open(os.path.join(d, "model.pkl"), "rb") as f:
        model = pickle.load(f)
    with open(os.path.join(d, "test.pkl"), "rb") as f:
        x_test, y_test = pickle.load(f)
    t1 = time.monotonic()
    correct = 0
    for _ in range(rounds):
        correct = int((model.predict(x_test) == y_test).sum())
    t2 = time.monotonic()
    print(json.dumps({"seconds": t2 - t0, "load_s": t1 - t0, "infer_s": t2 - t1, "accuracy": correct / len(y_test)}))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        run(sys.argv[2], int(sys.argv[3]))
