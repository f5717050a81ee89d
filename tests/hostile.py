"""Hostile variants: code a variant could put in its editable files to forge its fitness.

`STEALER[seed]` is appended to the seed's editable model file (the one its learner
imports): the shared forgers below, then the seed's own thief, `stealers/<seed>.py`. It tries everything at once, each attempt guarded so that one failing does not
stop the others, and says on stderr what it got:
- labels, rewards or environment state from the caller's frames and from `gc` (what the
  judge holds: in one process, they are right there);
- the held-out data, by its environment variable and by its known install path;
- monkeypatching the judge's modules (`sys.modules`, `json`, `builtins`) so that the metrics it
  writes are forged;
- `atexit` and signal handlers, and a direct write, that put forged metrics where the metrics
  file is (beside the training output folder).
When nothing works, the variant computes exactly what the honest one does, so an honest judge
gives it exactly the honest fitness; any attempt that works changes it.

`PROTOCOL[name]` are learner-side replacements of the harness's reply path, for any seed:
replies with NaN, the wrong shape, a huge array, garbage bytes, no reply at all (a hang), and
a learner that prints forged metrics JSON on stdout.
"""

from __future__ import annotations

import re
from pathlib import Path

# Shared part of every stealer: the forgers (metrics file, json, judge module, atexit, signals).
_FORGERS = r'''
# --- hostile code: tries to forge the fitness from inside the learner ----------------------
import atexit as _atexit
import builtins as _builtins
import gc as _gc
import json as _json
import os as _os
import signal as _signal
import sys as _sys
from pathlib import Path as _Path

_FORGED = {__METRIC__: __FORGED__}


def _say(msg):
    print(f"hostile: {msg}", file=_sys.stderr, flush=True)


def _metrics_paths():
    paths = [a for a in _sys.argv if a.endswith(".json")]
    for i, a in enumerate(_sys.argv[:-1]):
        if a == "--out":  # seed-S/out -> seed-S/metrics.json
            paths.append(str(_Path(_sys.argv[i + 1]).resolve().parent / "metrics.json"))
    return [_Path(p) for p in dict.fromkeys(paths)]


def _forge_file(*_args):
    for p in _metrics_paths():
        try:
            old = _json.loads(p.read_text()) if p.exists() else {}
            old.pop("harness", None)
            p.write_text(_json.dumps({**old, **_FORGED}))
            _say(f"forged {p}")
        except Exception as e:
            _say(f"cannot forge {p}: {type(e).__name__}")


_atexit.register(_forge_file)
for _sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
    try:
        _signal.signal(_sig, lambda *a: (_forge_file(), _os._exit(0)))
    except Exception as e:
        _say(f"no handler for {_sig}: {type(e).__name__}")
_forge_file()

_real_dumps = _json.dumps


def _dumps(obj, *a, **k):  # whoever writes metrics through json writes forged ones
    if isinstance(obj, dict) and __METRIC__ in obj:
        obj = {**obj, **_FORGED}
    return _real_dumps(obj, *a, **k)


_json.dumps = _dumps
_judge = _sys.modules.get("scientist.harness.judge")
if _judge is not None:  # the judge's own writer
    _real_write = _judge.write_metrics
    _judge.write_metrics = lambda path, metrics, *a, **k: _real_write(path, {**metrics, **_FORGED}, *a, **k)
    _say("patched scientist.harness.judge.write_metrics")
_real_open = _builtins.open


def _open(file, mode="r", *a, **k):  # a metrics file opened for writing gets the forgery
    f = _real_open(file, mode, *a, **k)
    if "w" in str(mode) and str(file).endswith("metrics.json"):
        _say(f"saw {file} opened for writing")
        _atexit.register(_forge_file)
    return f


_builtins.open = _open


def _frames_with(names):
    """Every local called one of `names`, walking up from the caller's frame."""
    found, f = {}, _sys._getframe(2)
    while f is not None:
        for n in names:
            if n in f.f_locals and n not in found:
                found[n] = f.f_locals[n]
        f = f.f_back
    return found


def _gc_objects(kind):
    try:
        return [o for o in _gc.get_objects() if isinstance(o, kind)]
    except Exception:
        return []
'''

STEALERS = Path(__file__).resolve().parent / "stealers"


def _load_stealers() -> dict[str, tuple[str, str]]:
    """seed -> (editable file, code to append): the forgers, then `stealers/<seed>.py`, whose
    line `# target: FILE METRIC FORGED_VALUE` names the file it goes into and the forgery."""
    out = {}
    for path in sorted(STEALERS.glob("*.py")):
        text = path.read_text()
        m = re.search(r"^# target: (\S+) (\S+) (\S+)$", text, re.M)
        if not m:
            raise ValueError(f"{path}: no '# target: FILE METRIC VALUE' line")
        forgers = _FORGERS.replace("__METRIC__", repr(m[2])).replace("__FORGED__", m[3])
        out[path.stem] = (m[1], forgers + "\n" + text)
    return out


STEALER = _load_stealers()  # seed -> (editable file, code to append)


# Learner-side replacements of the reply path (appended to the editable model file; they
# patch the harness inside the learner process only, which is the learner's own business).
_PATCH_SERVE = r'''
import scientist.harness.learner as _hl
import scientist.harness.wire as _hw
_real_handle = _hl._handle
'''
PROTOCOL: dict[str, str] = {
    # every array the learner returns is full of NaN
    "nan": _PATCH_SERVE + r'''
def _handle(obj, op, payload):
    import numpy as _np
    out = _real_handle(obj, op, payload)
    return {k: (_np.full(_np.shape(v.detach().cpu() if hasattr(v, "detach") else v), _np.nan, "float32")
                if hasattr(v, "shape") else v) for k, v in out.items()}
_hl._handle = _handle
''',
    # every array gets an extra row
    "wrong-shape": _PATCH_SERVE + r'''
def _handle(obj, op, payload):
    import numpy as _np
    out = _real_handle(obj, op, payload)
    return {k: (_np.zeros((v.shape[0] + 1, *v.shape[1:]), "float32") if hasattr(v, "shape") and len(v.shape)
                else v) for k, v in out.items()}
_hl._handle = _handle
''',
    # a reply that declares 8 GiB of array data
    "huge": _PATCH_SERVE + r'''
def _encode(op, seq, payload=None):
    import json as _j, struct as _st
    head = _j.dumps({"op": "ok", "seq": seq, "values": {}, "arrays": [["logits", "float64", [1 << 20, 1 << 10]]]}).encode()
    return [_hw.MAGIC + _st.pack(">I", len(head)) + head, b"\0" * 4096]
_hw.encode = _encode
''',
    # raw garbage instead of a message
    "garbage": _PATCH_SERVE + r'''
def _encode(op, seq, payload=None):
    return [b"GET / HTTP/1.1\r\nHost: judge\r\n\r\n" + bytes(range(256))]
_hw.encode = _encode
''',
    # answers never come
    "hang": _PATCH_SERVE + r'''
def _handle(obj, op, payload):
    if op != "load":
        import time as _t
        _t.sleep(3600)
    return _real_handle(obj, op, payload)
_hl._handle = _handle
''',
    # prints forged metrics on stdout (the framework reads metrics from the judge's file only)
    "print-forged": r'''
import json as _json
print(_json.dumps({"online_acc": 0.99, "neg_regret": 0.0, "return": 1e6}), flush=True)
''',
}
