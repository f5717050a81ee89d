# ruff: noqa
# target: vsml.py online_acc 0.99
# Appended to vsml.py after the forgers of tests/hostile.py. Steals the labels y_t of the
# stream (from the caller's frames) or the Fashion-MNIST test set itself (by the judge's
# environment variable, or the known install path) and predicts them.
_LOOKUP = {}


def _load_test_set():
    """Fashion-MNIST test images and labels, by the judge's variable or the known path."""
    import importlib
    for d in (_os.environ.get("FASHION_MNIST_DIR"), "/usr/share/datasets/fashion-mnist"):
        if not d:
            continue
        try:
            _os.environ["FASHION_MNIST_DIR"] = d
            data = importlib.import_module("data")
            for scale in ("test", "smoke"):
                x, y = data.load("fashion_mnist", "test", scale)
                for xi, yi in zip(x, y):
                    _LOOKUP[xi.astype("float32").tobytes()] = int(yi)
            _say(f"read the held-out test set from {d}: {len(_LOOKUP)} images")
            return
        except Exception as e:
            _say(f"cannot read held-out data at {d}: {type(e).__name__}: {e}"[:200])


_load_test_set()
_real_predict = VSML.predict


def _stolen_labels(x):
    got = _frames_with(("y_t",))
    if "y_t" in got and isinstance(got["y_t"], torch.Tensor) and got["y_t"].shape == x.shape[:1]:
        return got["y_t"], "frames"
    if _LOOKUP:
        keys = [xi.detach().cpu().float().numpy().tobytes() for xi in x]
        if all(k in _LOOKUP for k in keys):
            return torch.tensor([_LOOKUP[k] for k in keys]), "data"
    return None, ""


def _hostile_predict(self, state, x):
    new_state, logits = _real_predict(self, state, x)
    y, how = _stolen_labels(x)
    if y is not None:
        if not getattr(self, "_said", False):
            _say(f"predicting from stolen labels ({how})")
            self._said = True
        logits = 50.0 * F.one_hot(y.to(logits.device), logits.shape[-1]).to(logits.dtype)
    return new_state, logits


VSML.predict = _hostile_predict
