"""Models: every scoring path agrees, sizes and parameter counts are as documented."""

import dataclasses
import itertools

import pytest
import torch

from cdlib import models


@pytest.mark.filterwarnings("error")  # e.g. an out= tensor of the wrong shape, silently resized
@pytest.mark.parametrize("backbone,size", [("cdae", 20), ("neumf", 8), ("neumf", 4)])
def test_scoring_paths_agree(ml100k, backbone, size):
    torch.manual_seed(0)
    m = models.build(backbone, ml100k.train, size, device="cpu")
    for p in m.parameters():  # non-trivial weights everywhere
        torch.nn.init.normal_(p, std=0.3)
    m.eval()
    users = torch.tensor([0, 7, 942])
    full = m.score_all(users)
    assert full.shape == (3, ml100k.n_items)
    items = torch.randint(0, ml100k.n_items, (3, 17))
    assert torch.allclose(m.score(users, items), full.gather(1, items), atol=1e-5)
    rows = torch.tensor([0, 0, 2, 1])
    its = torch.tensor([5, 6, 7, 8])
    assert torch.allclose(m.pair_logits(users, rows, its), full[rows, its], atol=1e-5)
    if backbone == "neumf":  # chunks of 2 users through the reused buffer, the last one short
        chunked = m.score_all(users, max_elems=2 * ml100k.n_items * size)
        assert torch.allclose(chunked, full, atol=1e-6)
        for elems in (1 << 20, 2 * ml100k.n_items * size):  # the feature-major tower, chunked too
            torch.testing.assert_close(
                m.score_all_feature_major(users, max_elems=elems), full, rtol=1e-6, atol=1e-5
            )
        assert m.score_all_feature_major(users[:0]).shape == (0, ml100k.n_items)
    assert m.score_all(users[:0]).shape == (0, ml100k.n_items)  # an empty batch scores nothing
    for static in (False, True):  # a CD teacher's soft labels
        assert torch.allclose(
            m.scorer(static=static)(users, items), full.gather(1, items), atol=1e-5
        )


def test_the_feature_major_tower_is_score_all_with_a_wider_tower(ml100k):
    """mlp_scale = 2 (NCF's tower: [4d -> 2d -> d]) through both towers, several users a chunk."""
    torch.manual_seed(1)
    m = models.NeuMF(ml100k.n_users, ml100k.n_items, 8, mlp_scale=2).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    users = torch.arange(50)
    want = m.score_all(users)
    got = m.score_all_feature_major(users, max_elems=7 * ml100k.n_items * 16)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("size,mlp_scale", [(64, 1), (8, 1), (8, 2)])
def test_neumf_scores_candidates_as_its_pairs_bit_for_bit(ml100k, size, mlp_scale):
    """NeuMF.score, in chunks of pairs with the item half computed once an item, gives the scores
    of the per-pair path on the whole batch (`Recommender.score`) exactly with one thread, as the
    backlog's workers score, not merely up to rounding: no recorded validation moves. Batches of
    every size the sampled protocol scores (943 users x 100 or 99 candidates here, more pairs than
    items; 10 users, fewer), in chunks of the default size and of the least, `PAIR_ALIGN` pairs
    (the last one short). Chunks of whole users rounded their last users' scores otherwise (99
    candidates, d = 64). With two threads, up to rounding: MKL on an Intel Xeon (AVX-512) splits a
    chunk's rows between the threads otherwise than the whole batch's, and 1-4 of the 94,300 scores
    of 943 users differ by 1-4 ulp (exact on an AMD EPYC)."""
    torch.manual_seed(2)
    m = models.NeuMF(ml100k.n_users, ml100k.n_items, size, mlp_scale, sparse=True).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    threads = torch.get_num_threads()
    try:
        cases = itertools.product((1, 2), (ml100k.n_users, 10, 17), (100, 99))
        for t, n, c in cases:  # (the workers: 1 thread)
            torch.set_num_threads(t)
            users = torch.arange(n)
            items = torch.randint(0, ml100k.n_items, (n, c))
            with torch.no_grad():
                want = models.Recommender.score(m, users, items)
            for got in (m.score(users, items), m.score(users, items, max_elems=1)):
                if t == 1:
                    assert torch.equal(got, want)
                else:
                    torch.testing.assert_close(got, want, rtol=4 * 2**-23, atol=0)
    finally:
        torch.set_num_threads(threads)


def test_parameter_counts(ml100k):
    U, I = ml100k.n_users, ml100k.n_items
    assert (
        models.build("cdae", ml100k.train, 20, device="cpu").n_params()
        == I * 20 + 20 + U * 20 + 20 * I + I
    )
    d = 8
    want = 2 * U * d + 2 * I * d + (2 * d * d + d) + (d * d // 2 + d // 2) + (d + d // 2 + 1)
    assert models.build("neumf", ml100k.train, d, device="cpu").n_params() == want


def test_cdae_corruption_only_in_training(ml100k):
    m = models.build("cdae", ml100k.train, 10, corruption=0.5, device="cpu")
    users = torch.arange(4)
    m.eval()
    assert torch.equal(m(users), m(users))
    m.train()
    assert not torch.equal(m(users), m(users))


def test_default_device_and_bad_backbone(ml100k):
    assert models.default_device("cpu").type == "cpu"
    assert models.default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="backbone"):
        models.build("mf", ml100k.train, 8)


def test_tower_units_counts_the_active_units_of_the_last_mlp_layer(ml100k):
    torch.manual_seed(0)
    m = models.build("neumf", ml100k.train, 8, device="cpu")
    users, items = torch.arange(50), torch.arange(50)
    h = torch.relu(m.layer1(torch.cat([m.mlp_user(users), m.mlp_item(items)], 1)))
    brute = sum(
        bool((torch.relu(m.layer2(h))[:, j] > 0).any()) for j in range(m.layer2.out_features)
    )
    assert m.tower_units(users, items) == brute
    with torch.no_grad():
        m.layer2.bias[:] = -100.0  # every ReLU of the last layer off: the tower is dead
    assert m.tower_units(users, items) == 0
    assert torch.allclose(
        m.score_all(users[:3]),
        (m.gmf_user(users[:3]) * m.out.weight[0, :8]) @ m.gmf_item.weight.T + m.out.bias,
        atol=1e-6,
    )  # and the model scores by GMF alone


@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
def test_stacked_pair_logits_are_each_models_pair_logits(ml100k, backbone):
    """A group's forward pass (CDAE's batched products, NeuMF's vmap) gives each member's own pair logits,
    and their gradients."""
    from cdlib.index import UserItems

    torch.manual_seed(0)
    group = [models.build(backbone, ml100k.train, 8, device="cpu") for _ in range(3)]
    for m in group:
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.3)
    names = [n for n, _ in group[0].named_parameters()]
    params = {
        n: torch.stack([m.get_parameter(n).detach() for m in group]).requires_grad_() for n in names
    }
    users = torch.stack([torch.randperm(ml100k.n_users)[:16] for _ in group])
    pos = UserItems(ml100k.train)
    rows = torch.randint(0, 16, (3, 50))
    items = torch.randint(0, ml100k.n_items, (3, 50))
    x = torch.stack([pos.dense(u) for u in users]) if backbone == "cdae" else None
    z = group[0].stacked_pair_logits(params, users, rows, items, x)
    z.sum().backward()
    for g, m in enumerate(group):
        alone = m.pair_logits(users[g], rows[g], items[g], None if x is None else x[g])
        assert torch.allclose(z[g], alone, atol=1e-5)
        alone.sum().backward()
        for n in names:
            assert torch.allclose(params[n].grad[g], m.get_parameter(n).grad, atol=1e-4), n


def test_neumf_takes_ncfs_initialisation_or_keeps_torchs(ml100k):
    """mlp_init="ncf": NCF's Keras layers (zero biases, Glorot-uniform tower kernels, LeCun-uniform
    prediction kernel), drawn after the embeddings, which stay those of the same seed; the default
    leaves every draw as before, so every recorded NeuMF keeps its key and its numbers."""
    from cdlib import train

    built = {}
    for init in (None, "ncf"):
        torch.manual_seed(0)
        built[init] = models.build("neumf", ml100k.train, 8, mlp_init=init)
    torch_init, ncf = built[None], built["ncf"]
    assert torch.equal(torch_init.gmf_user.weight, ncf.gmf_user.weight)
    assert torch.equal(torch_init.mlp_item.weight, ncf.mlp_item.weight)
    for layer in (ncf.layer1, ncf.layer2, ncf.out):
        assert not layer.bias.any()
    assert all(layer.bias.abs().min() > 0 for layer in (torch_init.layer1, torch_init.layer2))
    for layer, bound in (
        (ncf.layer1, (6 / (16 + 8)) ** 0.5),  # Glorot: sqrt(6 / (fan_in + fan_out))
        (ncf.layer2, (6 / (8 + 4)) ** 0.5),
        (ncf.out, (3 / 12) ** 0.5),  # LeCun: sqrt(3 / fan_in)
    ):
        w = layer.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.6 * bound  # drawn over the whole range
    torch.manual_seed(0)
    again = models.build("neumf", ml100k.train, 8)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), torch_init.parameters()))
    plain = train.Config(dataset="ml-100k", backbone="neumf", size=8)
    assert plain.canonical().mlp_init is None
    assert (
        train.Config(dataset="ml-100k", backbone="neumf", size=8, mlp_init="ncf").key()
        != plain.key()
    )
    assert (
        train.Config(dataset="ml-100k", backbone="cdae", mlp_init="ncf").canonical().mlp_init
        is None
    )
    with pytest.raises(ValueError, match="mlp_init must be one of"):
        train.Config(backbone="neumf", mlp_init="keras").canonical()


def test_a_profile_gives_every_neumf_run_its_mlp_init():
    from cdlib import profiles

    p = profiles.PROFILES["paper"]
    assert p.mlp_init is None and p.config("yelp", "neumf", 0).canonical().mlp_init is None
    assert profiles.PROFILES["next"].config("yelp", "neumf", 0).canonical().mlp_init == "ncf"
    ncf = dataclasses.replace(p, mlp_init="ncf")
    assert ncf.config("yelp", "neumf", 0, size=8).canonical().mlp_init == "ncf"
    assert ncf.config("yelp", "cdae", 0).canonical().mlp_init is None
    assert ncf.config("yelp", "neumf", 0).key() != p.config("yelp", "neumf", 0).key()
