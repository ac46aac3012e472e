"""Block-wise plots (Agg backend) and the demo entry point's output shape."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hetmtl.blockwise import MTLHMB, simulate_blockwise  # noqa: E402
from hetmtl.plotting.blockwise import latent_tsne, rmse_boxplot  # noqa: E402


def test_rmse_boxplot_groups_by_value_and_method():
    rng = np.random.default_rng(0)
    df = pd.DataFrame([dict(value=v, method=m, rmse_avg=rng.uniform()) for v in (0.5, 0.7) for m in ("STL", "HTL", "MTL-HMB")
                       for _ in range(4)])
    fig = rmse_boxplot(df, title="Setting B", xlabel="rho2")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "0.7"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["STL", "HTL", "MTL-HMB"]
    assert len(ax.patches) == 6  # one box per (value, method)
    with pytest.raises(ValueError, match="lacks column"):
        rmse_boxplot(df.drop(columns="method"))


def test_latent_tsne_has_both_representations_per_task():
    sim = simulate_blockwise(n=(40, 30), p0=6, p_private=2, seed=0)
    m = MTLHMB(grid=[dict(width=8, depth=2, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.1)],
               hbi_grid=[dict(width=4, depth=1, lambda_orth=0.0)], max_epochs=3, hbi_max_epochs=3,
               random_state=0).fit(sim.data)
    fig = latent_tsne(m, sim.data, perplexity=10, max_iter=250)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["task1, shared", "task1, specific", "task2, shared", "task2, specific"]
    sizes = [c.get_offsets().shape[0] for c in ax.collections]
    assert sizes == [40, 40, 30, 30]
