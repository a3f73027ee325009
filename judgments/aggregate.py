"""crowd-kit's aggregation models beside the plain fractions (`ingest --aggregate MODEL`).

The BAPPS label stays the plain fraction (it is what the LPIPS trainer expects, and with 2
judgments per triplet a majority ties often); a model's per-example probability of p1 (JND:
"same") and its label are written to <subset>/judgments/aggregate-<model>.csv to compare.
Only the judgments that count (after quality control) are given to the model.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from bapps_build.errors import UserError

MODELS = {"majority-vote": "MajorityVote", "wawa": "Wawa", "dawid-skene": "DawidSkene", "glad": "GLAD",
          "mmsr": "MMSR"}


class AggregateError(UserError, ValueError):
    pass


def aggregate_subset(sj, qc, model: str) -> str:
    """CSV text: stem, n_total, fraction, <model>_probability, <model>_label."""
    if model not in MODELS:
        raise AggregateError(f"--aggregate {model!r}: choose from {', '.join(MODELS)}")
    try:
        import pandas as pd
        from crowdkit import aggregation
    except ImportError as exc:
        raise AggregateError(f"--aggregate needs crowd-kit: pip install crowd-kit (or pip install "
                             f"'bapps-build[crowd]') ({exc})") from None
    counted = np.flatnonzero(qc.counted)
    stems = sj.subset.stems
    if counted.size == 0:
        raise AggregateError(f"{sj.subset.rel}: no judgment counts yet, nothing to aggregate")
    data = pd.DataFrame({"task": [stems[e] for e in sj.example[counted]],
                         "worker": [sj.rows.worker[k] for k in counted],
                         "label": np.asarray(sj.rows.value, np.int64)[counted]})
    cls = getattr(aggregation, MODELS[model])
    aggregator = cls()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # GLAD takes log(0) when every answer is the same label (its result is still right), and
        # crowd-kit 1.4 uses pandas arguments that pandas 3 deprecates: neither is the user's business
        warnings.simplefilter("ignore")
        if hasattr(aggregator, "fit_predict_proba"):
            proba = aggregator.fit_predict_proba(data)
            p1 = proba[1] if 1 in proba.columns else pd.Series(0.0, index=proba.index)
            labels = proba.idxmax(axis=1)
        else:  # models that give labels only (MMSR)
            labels = aggregator.fit_predict(data)
            p1 = labels.astype(float)
    positive = "p1" if sj.subset.task == "2afc" else "same"
    out = io.StringIO()
    out.write(f"stem,n_total,fraction,{model}_probability_{positive},{model}_label\n")
    for k, stem in enumerate(stems):
        n = int(qc.n_total[k])
        frac = f"{qc.n_pos[k] / n}" if n else ""
        if stem in p1.index:
            out.write(f"{stem},{n},{frac},{float(p1[stem])},{int(labels[stem])}\n")
        else:
            out.write(f"{stem},{n},{frac},,\n")
    return out.getvalue()
