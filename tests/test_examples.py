"""Every example with two fidelities: the same latent and observed sites, shapes and supports."""


def test_fidelities_agree_in_sites_and_shapes(fidelity_pair, site_signature):
    """Latent sites (names, shapes, supports) and observed sites (names, shapes, event
    shapes) of the low- and high-fidelity models are the same, as ``refine`` requires;
    each model has at least one of each."""
    name, low, high = fidelity_pair
    lo, hi = site_signature(low), site_signature(high)
    assert lo["latent"] and lo["observed"], name
    assert lo == hi, (name, lo, hi)


def test_every_example_pair_is_checked():
    """The parametrisation finds the five examples with two fidelities."""
    from conftest import _fidelity_pairs

    assert [p[0] for p in _fidelity_pairs()] == [
        "quadratic",
        "burgers",
        "lorenz63",
        "ou",
        "runaway",
    ]
