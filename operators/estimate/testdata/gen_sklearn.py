#!/usr/bin/env python3
"""Generates sklearn_fixture.csv, the scikit-learn answers the Go estimator must match.

Run from this directory with Debian's python3 (scikit-learn, numpy, pandas):
    /usr/bin/python3 gen_sklearn.py
Columns: the three features, the label, then scikit-learn's probabilities for
  p_lr        StandardScaler + LogisticRegression(C=1.0)           (L2, lbfgs, intercept unpenalised)
  p_lr_c01    the same with C=0.1
  p_lr_bal    the same with class_weight="balanced"
  s           the C=1 model's decision function
  p_platt     Platt's sigmoid fitted on s (sklearn.calibration._sigmoid_calibration)
  p_iso       IsotonicRegression(out_of_bounds="clip") fitted on s
Solver tolerance is tightened (tol=1e-10) so that the fixture is the optimum of
the objective, not an early stop."""
import numpy as np, pandas as pd
from sklearn.calibration import _sigmoid_calibration
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

rng = np.random.default_rng(7)
n = 400
x1 = rng.normal(0.3, 2.0, n)
x2 = 0.5 * x1 + rng.normal(5, 1.0, n)  # correlated, offset scale
x3 = rng.exponential(3.0, n)
logit = 0.8 * x1 - 0.6 * (x2 - 5) + 0.2 * x3 - 0.4
y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
X = np.column_stack([x1, x2, x3])
Z = StandardScaler().fit_transform(X)

def lr(**kw):
    return LogisticRegression(tol=1e-10, max_iter=10000, **kw).fit(Z, y)

m = lr(C=1.0)
s = m.decision_function(Z)
a, b = _sigmoid_calibration(s, y)
iso = IsotonicRegression(out_of_bounds="clip").fit(s, y)
out = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "y": y,
                    "p_lr": m.predict_proba(Z)[:, 1],
                    "p_lr_c01": lr(C=0.1).predict_proba(Z)[:, 1],
                    "p_lr_bal": lr(C=1.0, class_weight="balanced").predict_proba(Z)[:, 1],
                    "s": s,
                    "p_platt": 1 / (1 + np.exp(a * s + b)),
                    "p_iso": iso.predict(s)})
out.to_csv("sklearn_fixture.csv", index=False, float_format="%.17g")
