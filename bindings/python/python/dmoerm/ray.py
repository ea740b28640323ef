"""Scoring a dataset with Ray Data, on one machine or a cluster.

    import ray
    from dmoerm.ray import DmoermScorer

    ray.init()  # or ray.init(address="HEAD:6379") on a cluster
    scored = ray.data.read_json("rows.jsonl").map_batches(
        DmoermScorer,
        fn_constructor_kwargs={"model": "/models/model.dmoerm", "device": "cpu"},
        concurrency=4,          # actors: each loads the model once; fewer than the CPUs
        batch_size=256,
        batch_format="pyarrow",
    )
    scored.write_json("scored/")

Each row is ``{"prompt" or "messages", "response", ...}`` as for ``dmoerm score --input``; the
output keeps every input column and adds the score's: ``reward``, ``task``, ``truncated``,
``task_probs`` and ``capabilities`` (maps of name to value). The model path is opened by each
actor, so on a cluster it must exist on every node (or on storage they share). This module
does not import Ray; any batch mapper that passes ``pyarrow.Table`` batches can use the class.
"""

from ._dmoerm import RewardModel


class DmoermScorer:
    """A callable class for ``Dataset.map_batches``: loads the model once (per actor) and
    scores each ``pyarrow.Table`` batch in one call to :meth:`RewardModel.score_batch`."""

    def __init__(self, model, device="cpu"):
        self.model = RewardModel(model, device=device)

    def __call__(self, batch):
        import pyarrow as pa

        rows = batch.to_pylist()
        inputs = [
            {key: row[key] for key in ("prompt", "messages", "response") if row.get(key) is not None}
            for row in rows
        ]
        scores = self.model.score_batch(inputs)
        scalar = pa.map_(pa.string(), pa.float32())
        columns = {
            "reward": pa.array([s["reward"] for s in scores], pa.float32()),
            "task": pa.array([s["task"] for s in scores], pa.string()),
            "truncated": pa.array([s["truncated"] for s in scores], pa.bool_()),
            "task_probs": pa.array([list(s["task_probs"].items()) for s in scores], scalar),
            "capabilities": pa.array([list(s["capabilities"].items()) for s in scores], scalar),
        }
        for name, values in columns.items():
            if name in batch.column_names:
                batch = batch.drop_columns([name])
            batch = batch.append_column(name, values)
        return batch
