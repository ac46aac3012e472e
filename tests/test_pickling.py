"""Every fitted estimator survives pickle and deepcopy (joblib and Dask workers return them):
the copy predicts / summarises exactly like the original (issue #23)."""
import copy
import pickle

import numpy as np
import pytest


def _roundtrips(est):
    return [pickle.loads(pickle.dumps(est)), copy.deepcopy(est)]


def test_dml_estimators_pickle():
    from hetmtl.latefusion import MultiSiteDML, SiteDML
    from hetmtl.latefusion.simulate import make_dml_sites

    sites = make_dml_sites(n_sites=3, n_range=(120, 120), random_state=0)
    fit = MultiSiteDML("ate", n_rep=1, n_folds=3, random_state=0).fit(sites.data)
    for copy_ in _roundtrips(fit):
        assert copy_.summary_frame().equals(fit.summary_frame())
    site = next(iter(fit.estimators_.values()))
    assert isinstance(site, SiteDML)
    for copy_ in _roundtrips(site):
        np.testing.assert_array_equal(copy_.coef_, site.coef_)
        assert copy_.confint().equals(site.confint())


def test_dual_encoder_pickles():
    pytest.importorskip("torch")
    from hetmtl.data import MultiTaskData
    from hetmtl.encoders import DualEncoderMTL

    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(40, 3)) for _ in range(2)]
    data = MultiTaskData(Xs, [X[:, 0] + 0.1 * rng.normal(size=40) for X in Xs], ["a", "b"])
    with pytest.warns(UserWarning, match="max_epochs"):
        m = DualEncoderMTL(hidden=(4,), n_shared=2, n_specific=0, max_epochs=5, patience=2, random_state=0).fit(data)
    for copy_ in _roundtrips(m):
        np.testing.assert_array_equal(copy_.predict(Xs[0], task="a"), m.predict(Xs[0], task="a"))


def test_blockwise_estimators_pickle():
    pytest.importorskip("torch")
    from hetmtl.blockwise.baselines import STL, CCLasso
    from hetmtl.blockwise.model import MTLHMB
    from hetmtl.blockwise.selection import make_split
    from hetmtl.blockwise.simulate import simulate_blockwise

    sim = simulate_blockwise(n=(60, 50), p0=6, p_private=(3, 3), rho=(0.9, 0.7), seed=1)
    split = make_split(sim.data, seed=0)
    X = np.hstack([sim.data.x0(0), sim.data.x_private(0)])[split.test[0]]
    fast = dict(max_epochs=5, random_state=0)
    for est in (MTLHMB(hbi_max_epochs=5, **fast).fit(sim.data, split), STL(**fast).fit(sim.data, split),
                CCLasso(per_task=True, random_state=0).fit(sim.data, split)):
        for copy_ in _roundtrips(est):
            np.testing.assert_array_equal(copy_.predict(X, task=0 if not isinstance(est, CCLasso) else "task1"),
                                          est.predict(X, task=0 if not isinstance(est, CCLasso) else "task1"))
