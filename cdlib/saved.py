"""Saved models that recommend: a trained teacher or student in one `.pt` file with what it needs
to score users again (its data's original ids and interactions), and `load_model` to rebuild it.

    model = cdlib.load_model("out/student.pt")        # checks it against out/card.json when present
    model.recommend(["u0001", "u0042"], k=10)         # the data's own ids in and out

The file holds tensors, strings and numbers only (it loads with torch.load(weights_only=True)).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import dataset, index, models, paths, train

FORMAT = "cdlib-model/1"


class ModelError(Exception):
    """A saved model that cannot be used: unreadable, not a cdlib model, or not the one its card names."""


def _ids(ids: np.ndarray):
    """Original ids in a form torch.save(weights_only) keeps: an int64 tensor, or a list of strings."""
    ids = np.asarray(ids)
    return (
        torch.from_numpy(ids.astype(np.int64)) if ids.dtype.kind in "iu" else [str(x) for x in ids]
    )


def save_model(
    model: models.Recommender, ds: dataset.Dataset, path, config: dict | None = None
) -> str:
    """Write `model` with `ds`'s ids and interactions to `path` atomically; returns its SHA-256."""
    path = Path(path)
    held = np.stack([ds.valid_item, ds.test_item], 1)
    bundle = {
        "format": FORMAT,
        "backbone": "cdae" if isinstance(model, models.CDAE) else "neumf",
        "size": int(model.size),
        "corruption": float(getattr(model, "corruption", 0.0)),
        "mlp_scale": int(getattr(model, "mlp_scale", 1)),
        "config": json.dumps(config or {}, default=str),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "user_ids": _ids(ds.user_ids),
        "item_ids": _ids(ds.item_ids),
        "train_indptr": torch.from_numpy(ds.train.indptr.astype(np.int64)),
        "train_indices": torch.from_numpy(ds.train.indices.astype(np.int64)),
        "held_out": torch.from_numpy(held.astype(np.int64)),
    }
    return train.save_atomic(bundle, path)


class SavedModel:
    """A loaded teacher or student: `recommend` and `score` in the data's original ids."""

    def __init__(
        self,
        model: models.Recommender,
        user_ids,
        item_ids,
        seen: sp.csr_matrix,
        card: dict | None,
        path: Path,
    ):
        self.model, self.card, self.path = model, card, path
        self.user_ids = np.asarray(user_ids)
        self.item_ids = np.asarray(item_ids)
        self._users = pd.Index(self.user_ids)
        self.seen = index.UserItems(seen, model.device)

    def __repr__(self) -> str:
        return (
            f"SavedModel({self.path.name}: {type(self.model).__name__} size {self.model.size}, "
            f"{self.model.n_params():,} parameters, {len(self.user_ids):,} users, {len(self.item_ids):,} items)"
        )

    def _index(self, user_ids) -> torch.Tensor:
        ids = list(user_ids) if not isinstance(user_ids, (str, int, np.integer)) else [user_ids]
        idx = self._users.get_indexer(ids)
        if (idx < 0).any():
            unknown = [ids[i] for i in np.flatnonzero(idx < 0)]
            kind = type(self.user_ids[0]).__name__ if len(self.user_ids) else "?"
            raise KeyError(
                f"{len(unknown)} unknown user id(s): {unknown[:10]}{' ...' if len(unknown) > 10 else ''} "
                f"(this model knows {len(self.user_ids):,} users, ids of type {kind})"
            )
        return torch.from_numpy(idx.astype(np.int64)).to(self.model.device)

    @torch.no_grad()
    def recommend(
        self, user_ids, k: int = 10, exclude_seen: bool = True, batch_size: int = 1024
    ) -> pd.DataFrame:
        """The top-k items of each user: a table (user, rank, item, score) in the data's own ids,
        k rows per user in the order asked. exclude_seen leaves out every item the user interacted
        with in the data (training, validation and test items). Scored in batches of users."""
        users = self._index(user_ids)
        n_items = len(self.item_ids)
        if not 1 <= k <= n_items:
            raise ValueError(f"k must be between 1 and the number of items ({n_items}), got {k}")
        items, scores = [], []
        for s in range(0, len(users), batch_size):
            u = users[s : s + batch_size]
            sc = self.model.score_all(u)
            if exclude_seen:
                rows, cols = self.seen.pairs(u)
                sc[rows, cols] = -torch.inf
            val, idx = sc.topk(k, dim=1)
            items.append(idx.cpu())
            scores.append(val.cpu())
        items, scores = torch.cat(items).numpy(), torch.cat(scores).numpy()
        out = pd.DataFrame(
            {
                "user": np.repeat(self.user_ids[users.cpu().numpy()], k),
                "rank": np.tile(np.arange(1, k + 1), len(users)),
                "item": self.item_ids[items.ravel()],
                "score": scores.ravel(),
            }
        )
        return out[np.isfinite(out.score)].reset_index(
            drop=True
        )  # a user with fewer unseen items than k

    @torch.no_grad()
    def score(self, user_ids) -> np.ndarray:
        """[users x items] logits, columns in the order of `item_ids`."""
        return self.model.score_all(self._index(user_ids)).cpu().numpy()


def load_model(path, card=None, device: str | None = None) -> SavedModel:
    """Rebuild a teacher or student from its `.pt` (and its card, by default `card.json` beside it:
    the file's SHA-256 must be the one the card names). A damaged file or a card that does not
    match is refused with ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    card_path = Path(card) if card is not None else path.parent / "card.json"
    card_data = None
    if card_path.is_file():
        try:
            card_data = json.loads(card_path.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"{card_path}: not a readable card ({e})") from None
        want = card_data.get("weights", {}).get(path.name, {}).get("sha256")
        if want is None:
            raise ModelError(
                f"{card_path} names no weights file {path.name!r} (it names "
                f"{sorted(card_data.get('weights', {}))})"
            )
        got = paths.sha256(path)
        if got != want:
            raise ModelError(
                f"{path}: SHA-256 {got} is not the {want} that {card_path} records; the file was changed "
                "or belongs to another card. Refusing to load it."
            )
    elif card is not None:
        raise ModelError(f"{card_path}: no such card")
    try:
        b = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises many types for a damaged file
        raise ModelError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from None
    if not isinstance(b, dict) or b.get("format") != FORMAT:
        raise ModelError(
            f"{path}: not a {FORMAT} file (a bare state dict, as the cache holds, has no ids; "
            "use the .pt files that python -m cdlib.distill writes)"
        )
    n_users, n_items = len(b["user_ids"]), len(b["item_ids"])
    train_matrix = sp.csr_matrix(
        (
            np.ones(len(b["train_indices"]), np.float32),
            b["train_indices"].numpy(),
            b["train_indptr"].numpy(),
        ),
        shape=(n_users, n_items),
    )
    dev = models.default_device(device)
    model = models.build(  # a CDAE trained with the sparse step keeps its encoder item-major
        b["backbone"],
        train_matrix,
        b["size"],
        b["corruption"],
        dev,
        b["mlp_scale"],
        sparse="encoder_items" in b["state_dict"],
    )
    try:
        model.load_state_dict(b["state_dict"])
    except RuntimeError as e:
        raise ModelError(
            f"{path}: weights do not fit a {b['backbone']} of size {b['size']} ({e})"
        ) from None
    model.eval()
    held = b["held_out"].numpy()
    seen = dataset.with_items(train_matrix, held[:, 0], held[:, 1])
    ids = [
        x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=object)
        for x in (b["user_ids"], b["item_ids"])
    ]
    return SavedModel(model, ids[0], ids[1], seen, card_data, path)


def from_run(config, device: str | None = None) -> SavedModel:
    """The model of a recorded run from its cached weights ($CDLIB_CACHE/weights/<key>.pt, which
    every run of `make reproduce` writes, students included), ready to recommend.
    FileNotFoundError when this machine has not trained (or been given) those weights."""
    cfg = config.canonical()
    ds = train.dataset_for(cfg)
    model = train.load_weights(cfg, ds, models.default_device(device))
    return SavedModel(
        model,
        ds.user_ids,
        ds.item_ids,
        dataset.with_items(ds.train, ds.valid_item, ds.test_item),
        None,
        train.weights_path(cfg),
    )
