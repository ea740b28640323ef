"""Synthetic preference data of realistic length for measuring training throughput (the
numbers in BENCHMARKS.md): prompts of 20 words, four responses of 24-96 words each (~80 tokens per text on average), random
ranks and two tasks. The text is meaningless on purpose: only its length matters here.

    python3 benches/train/make_data.py OUT_DIR [PROMPTS]
"""

import json
import os
import random
import sys

WORDS = (
    "the of and to in is was for that with as on by at from this be are or an it not but have had "
    "which one all were when there can more their if will about would time also what so up out many "
    "other some them into only new two these may first then do any like my now over such our man me "
    "even most made after did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own see "
    "men work long get here between both life being under never day same another know while last "
    "might us great old year off come since against go came right used take three"
).split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def main():
    out = sys.argv[1]
    prompts = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    rng = random.Random(0)
    os.makedirs(out, exist_ok=True)
    for name, n in [("train.jsonl", prompts), ("valid.jsonl", max(8, prompts // 8))]:
        with open(os.path.join(out, name), "w") as f:
            for i in range(n):
                task = ["chat", "qa"][i % 2]
                responses = [" ".join(sentence(rng, 12) for _ in range(rng.randint(2, 8))) for _ in range(4)]
                rank = rng.sample(range(1, 5), 4)
                f.write(json.dumps({"src": [sentence(rng, 20)], "response": responses, "rank": rank, "label": task}) + "\n")


if __name__ == "__main__":
    main()
