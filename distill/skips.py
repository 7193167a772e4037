"""The training samples and shards a run left out, each counted once however often it was met.

The streams find and record skips (``data.stream.SkipLog``); each batch carries the new ones.
Loader workers of one rank may read the same shard, ranks with fewer shards than devices read
the same shards, and a shard is read again every time it is drawn: ``TrainingSkips`` keeps one
entry per skipped sample or shard (``data.stream.skip_key``) and merges the ranks' entries at
the end of ``fit``, so ``results.json`` counts what was bad, not how often it was read.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.distributed as dist

from data.stream import skip_key

MAX_REASONS = 20  # reasons kept in results.json and the summary (the count covers all)


class TrainingSkips:
    """Distinct (where, reason) skips of one rank; ``merge_ranks`` unites every rank's."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str]] = {}
        self.earlier = 0  # the count of a checkpoint written before entries were kept

    def update(self, skipped: Iterable) -> None:
        for where, reason in skipped:
            self.entries.setdefault(skip_key(str(where), str(reason)), (str(where), str(reason)))

    @property
    def count(self) -> int:
        return len(self.entries) + self.earlier

    def summary(self) -> dict:
        """``{"count", "first"}``: how many, and the first ``MAX_REASONS`` with their reasons."""
        first = [list(x) for x in list(self.entries.values())[:MAX_REASONS]]
        return {"count": self.count, "first": first}

    def merge_ranks(self) -> None:
        """Every rank's entries, united (a collective: every rank calls it)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (list(self.entries.values()), self.earlier))
        self.entries = {}
        for entries, _ in gathered:
            self.update(entries)
        self.earlier = max(earlier for _, earlier in gathered)  # all ranks resume one file

    def state(self) -> dict:
        """Plain lists for the checkpoint (read back with ``weights_only=True``)."""
        return {"count": self.count, "entries": [list(x) for x in self.entries.values()]}

    def load(self, state: dict) -> None:
        self.entries = {}
        self.update(state.get("entries", []))
        self.earlier = max(0, int(state.get("count", 0)) - len(self.entries))
