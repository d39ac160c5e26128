#!/usr/bin/env python3
"""Writes the demo's sample of the tinylm traces (see README.md).

usage: make-sample.py TRACES.jsonl.gz OUT.jsonl.gz [MODEL] [PER_DOMAIN]

Keeps the first PER_DOMAIN (default 160) responses of MODEL (default
tinylm-large) in every domain, and
only the fields the demo reads: id, created, model, domain, prompt, correct,
sampling.temperature, and per choice finish_reason and the logprobs (chosen
and top-20) without the token strings.
"""
import gzip, json, sys

src, dst = sys.argv[1], sys.argv[2]
model = sys.argv[3] if len(sys.argv) > 3 else "tinylm-large"
per = int(sys.argv[4]) if len(sys.argv) > 4 else 160
seen = {}
with gzip.open(src, "rt") as f, gzip.GzipFile(dst, "wb", mtime=0, compresslevel=9) as out:
    for line in f:
        r = json.loads(line)
        if r["model"] != model:
            continue
        key = (r["model"], r["domain"])
        if seen.get(key, 0) >= per:
            continue
        seen[key] = seen.get(key, 0) + 1
        choices = []
        for c in r["choices"]:
            steps = [{"logprob": s["logprob"], "top_logprobs": [{"logprob": t["logprob"]} for t in s["top_logprobs"]]}
                     for s in c["logprobs"]["content"]]
            choices.append({"index": c["index"], "finish_reason": c["finish_reason"], "logprobs": {"content": steps}})
        keep = {"id": r["id"], "created": r["created"], "model": r["model"], "domain": r["domain"],
                "prompt": r["prompt"], "correct": r["correct"],
                "sampling": {"temperature": r["sampling"]["temperature"]}, "choices": choices}
        out.write((json.dumps(keep, separators=(",", ":")) + "\n").encode())
print({f"{m}/{d}": n for (m, d), n in sorted(seen.items())}, file=sys.stderr)
