#!/usr/bin/env python3
"""Generates ref_protocol_mistral.csv: the scikit-learn reference protocol
(../../../../shared/tools/ref-eval.py, run unchanged) on the Mistral rows of
plaut-dev with k = 1, 2, at full precision, one row per (k, training set, method).

    /usr/bin/python3 gen_ref_protocol.py /work/shared/tools/ref-eval.py /work/shared/data/plaut-dev.csv.gz
"""
import contextlib, io, os, sys, tempfile
import pandas as pd

ref, data = sys.argv[1], sys.argv[2]
df = pd.read_csv(data)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "mistral.csv")
    df[df.model == "Mistral"].to_csv(path, index=False)
    sys.argv = [ref, path, "confidence", "1", "2"]
    ns = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(open(ref).read(), ns)
r = ns["r"]
r = r[r.method.isin(["platt", "platt_balanced", "isotonic", "atc", "raw_mean"])]
r.to_csv("ref_protocol_mistral.csv", index=False, float_format="%.10g")
