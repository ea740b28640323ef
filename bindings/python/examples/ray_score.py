"""Score a JSONL file with dmoerm on a Ray cluster (or a local one).

    python bindings/python/examples/ray_score.py --model models/default/model.dmoerm \
        --input rows.jsonl --output scored/ [--address HEAD:6379] [--actors 4] [--batch-size 256]

Each actor loads the model once and scores batches of rows; each output row is its input row
plus `reward`, `task`, `truncated`, `task_probs` and `capabilities`. On a multi-node cluster
the model path must exist on every node, and --input/--output must be paths every node can
read and write (shared storage, or s3:// and the like, as Ray Data reads them). Use fewer
actors than the cluster has CPUs: reading and writing need one.
"""

import argparse

import ray

from dmoerm.ray import DmoermScorer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--address", default=None, help="the cluster's head, e.g. 10.0.0.1:6379 (default: local)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()

    ray.init(address=args.address)
    # Each actor reserves a CPU (its model scores on several threads all the same); reading and
    # writing the files need CPUs too, or the job waits for ever.
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if args.actors >= cpus:
        raise SystemExit(f"--actors {args.actors} on {cpus} CPUs: leave at least one CPU for reading and writing")
    scored = ray.data.read_json(args.input).map_batches(
        DmoermScorer,
        fn_constructor_kwargs={"model": args.model, "device": args.device},
        concurrency=args.actors,
        batch_size=args.batch_size,
        batch_format="pyarrow",
    )
    scored.write_json(args.output)


if __name__ == "__main__":
    main()
