"""Forest plot and shrinkage path: they draw what the fit says."""
import numpy as np
import pytest
from fusion_testdata import make_summaries
from matplotlib.collections import LineCollection

from hetmtl.latefusion import LateFusion
from hetmtl.plotting.fusion import forest_plot, shrinkage_path


@pytest.fixture(scope="module")
def fitted():
    sums, _ = make_summaries(np.random.default_rng(4), K=6, d=2, eta=0.1, outliers=1)
    return LateFusion(n_boot=100, random_state=0).fit(sums)


def test_forest_plot_draws_every_site_and_the_centre(fitted, tmp_path):
    fig = forest_plot(fitted)
    axes = fig.axes
    assert len(axes) == 2
    ax = axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == fitted.sites_
    # the dashed centre line sits at the fitted centre
    centre_line = [l for l in ax.get_lines() if l.get_linestyle() == "--"][0]
    assert centre_line.get_xdata()[0] == pytest.approx(fitted.centre_[0])
    # the reported interval segments span confint's bounds (robust EB, around its own estimate)
    segs = [c for c in ax.collections if isinstance(c, LineCollection)][1].get_segments()
    ci = fitted.confint().xs(fitted.coef_names_[0], level="coef").loc[fitted.sites_]
    np.testing.assert_allclose(sorted(s[0][0] for s in segs), sorted(ci["2.5 %"]))
    assert "robust empirical Bayes" in fig._suptitle.get_text()
    fig.savefig(tmp_path / "forest.png")
    assert (tmp_path / "forest.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown coefficient"):
        forest_plot(fitted, coefs=["nope"])


def test_shrinkage_path_goes_from_sites_to_centre(fitted):
    fig = shrinkage_path(fitted, coefs=["const"])
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # path + CV curve
    site_lines = [l for l in ax.get_lines() if l.get_linestyle() == "-" and len(l.get_xdata()) > 1]
    assert len(site_lines) == len(fitted.sites_)
    first = np.array([l.get_ydata()[0] for l in site_lines])
    last = np.array([l.get_ydata()[-1] for l in site_lines])
    # small C: near the site estimates; large C: spread shrinks toward the centre
    np.testing.assert_allclose(first, fitted.dml_coef_[:, 0], atol=0.05)
    assert np.ptp(last) < np.ptp(first)


def test_forest_plot_joint_intervals():
    sums, _ = make_summaries(np.random.default_rng(5), K=5, d=2, eta=0.1)
    fit = LateFusion(penalty="squared", tau2="reml", ci="bootstrap", n_boot=200, random_state=1).fit(sums)
    fig = forest_plot(fit, joint=True)
    segs = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)][1].get_segments()
    joint = fit.confint(joint=True).xs(fit.coef_names_[0], level="coef").loc[fit.sites_]
    np.testing.assert_allclose(sorted(s[0][0] for s in segs), sorted(joint["2.5 %"]))
    pointwise = fit.confint().xs(fit.coef_names_[0], level="coef").loc[fit.sites_]
    assert np.all(joint["2.5 %"].to_numpy() < pointwise["2.5 %"].to_numpy())
    assert "simultaneous intervals" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="joint"):
        forest_plot(fit, joint="yes")
