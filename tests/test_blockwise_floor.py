"""Bayes floor of the MTL-HMB DGP (hetmtl.blockwise.simulate.bayes_floor)."""
import numpy as np
import pytest

from hetmtl.blockwise.simulate import (_observed_columns, bayes_floor, bayes_predict, setting_params,
                                       simulate_blockwise)


def _observed(sim, t):
    P = sim.params
    obs, _ = _observed_columns(P["p0"], P["p_private"], t)
    return sim.X_full[t][:, obs]


@pytest.mark.parametrize("setting,value", [("C", 0.1), ("linear", True)])
def test_floor_matches_monte_carlo(setting, value):
    """Large sample of one replicate: RMSE of y - E[y | observed] equals the exact floor within MC error."""
    kw = {**setting_params(setting, value), "n": 40000}
    sim = simulate_blockwise(**kw, seed=4)
    floor = bayes_floor(**setting_params(setting, value), seed=4)
    np.testing.assert_allclose(floor.per_task, bayes_floor(**sim.params).per_task)  # same seed -> same v
    for t in range(sim.params["n_tasks"]):
        r2 = (sim.data.y(t) - bayes_predict(sim.params, t, _observed(sim, t))) ** 2
        rmse, se = np.sqrt(r2.mean()), r2.std() / np.sqrt(len(r2)) / (2 * np.sqrt(r2.mean()))
        assert abs(rmse - floor.per_task[t]) < 4 * se, (t, rmse, floor.per_task[t], se)
        assert floor.per_task[t] > 1.2 * sim.params["sigma"][t]  # the unseen blocks dominate sigma
    assert floor.average == pytest.approx(floor.per_task.mean())


@pytest.mark.parametrize("linear", [False, True])
def test_floor_is_sigma_without_unseen_signal(linear):
    kw = dict(p0=6, p_private=(3, 4), rho=(0.9, 0.6), alpha=0.4, sigma=(0.1, 0.3), linear=linear)
    rng = np.random.default_rng(0)
    v_c, v_t = rng.normal(-10, 10, 13), [rng.normal(-10, 10, 13) for _ in range(2)]
    full = bayes_floor(**kw, v_c=v_c, v_t=v_t)
    assert (full.per_task > np.array([0.1, 0.3]) + 1e-3).all()
    # zero coefficients on the blocks task 0 does not observe: its floor is sigma_0
    v_c0, v_t0 = v_c.copy(), [v.copy() for v in v_t]
    v_c0[9:], v_t0[0][9:] = 0.0, 0.0
    f = bayes_floor(**kw, v_c=v_c0, v_t=v_t0)
    assert f.per_task[0] == pytest.approx(0.1, abs=1e-12) and f.per_task[1] > 0.3
    # task 0 observes every block (the other task's block is empty)
    g = bayes_floor(**{**kw, "p_private": (7, 0)}, seed=1)
    assert g.per_task[0] == pytest.approx(0.1, abs=1e-12)


def test_floor_below_a_fitted_predictor_and_seed_average():
    from sklearn.linear_model import RidgeCV

    kw = setting_params("C", 0.1)
    n_train = 180
    sim = simulate_blockwise(**{**kw, "n": n_train + 4000}, seed=0)
    floor = bayes_floor(**kw, seed=0)
    for t in range(2):
        Z = _observed(sim, t)
        Z = np.hstack([Z, Z**2])
        y = sim.data.y(t)
        fit = RidgeCV(alphas=np.logspace(-4, 3, 15)).fit(Z[:n_train], y[:n_train])
        rmse = np.sqrt(np.mean((fit.predict(Z[n_train:]) - y[n_train:]) ** 2))
        assert floor.per_task[t] < rmse < 3 * floor.per_task[t]
    avg = bayes_floor(**kw, seed=range(3))
    assert avg.per_seed.shape == (3, 2) and avg.seeds == [0, 1, 2]
    np.testing.assert_allclose(avg.per_seed[0], floor.per_task)
    assert avg.average == pytest.approx(avg.per_seed.mean())


def test_floor_refuses_non_gaussian_and_bad_coefficients():
    with pytest.raises(ValueError, match="Gaussian"):
        bayes_floor(**setting_params("B", 0.7), gaussian=False, seed=0)
    with pytest.raises(ValueError, match="both"):
        bayes_floor(**setting_params("B", 0.7), v_c=np.zeros(150))
    sim = simulate_blockwise(n=20, p0=5, p_private=2, gaussian=False, seed=0)
    with pytest.raises(ValueError, match="Gaussian"):
        bayes_predict(sim.params, 0, _observed(sim, 0))
