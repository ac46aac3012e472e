"""Every loss term of Step 1 (L_pre, L_recon, HBI orthogonality) and Step 2 (L_integ, R_orth,
R_imp, R_dr) against a direct numpy computation on the unpadded weights of each configuration."""
import numpy as np
import pytest
import torch

from hetmtl.blockwise.nets import HBINet, Step2Net

relu = lambda a: np.maximum(a, 0.0)  # noqa: E731


def _np(t):
    return t.detach().numpy()


def _rows2(W, h, H):
    """Unpadded rows of a weight acting on a concatenation of two width-h segments."""
    return np.vstack([W[:h], W[H:H + h]])


@pytest.fixture
def step2_setup():
    rng = np.random.default_rng(0)
    T, p0, p1, p2, B = 2, 5, 3, 2, 7
    P = p0 + p1 + p2
    # code slices (spec §2.2): task 1 imputes columns p0+p1 onward, task 2 columns p0..p0+p1
    imputed = np.zeros((T, P))
    imputed[0, p0 + p1:] = 1
    imputed[1, p0:p0 + p1] = 1
    configs = [dict(width=4, depth=2, lambda_orth=0.1, lambda_imp=0.01, lambda_dr=1.0),
               dict(width=6, depth=3, lambda_orth=0.01, lambda_imp=0.1, lambda_dr=0.1),
               dict(width=6, depth=2, lambda_orth=1.0, lambda_imp=1.0, lambda_dr=0.01)]
    x0 = rng.normal(size=(T, B, p0))
    xf = np.concatenate([x0, rng.normal(size=(T, B, p1 + p2))], -1)
    y = rng.normal(size=(T, B)) * 3
    w = np.ones((T, B))
    w[1, -2:] = 0.0  # two padded rows in task 2
    return dict(T=T, p0=p0, P=P, imputed=imputed, configs=configs, x0=x0, xf=xf, y=y, w=w)


def _reference_step2(params, g, c, H, s, dr_mode):
    h, L, T = c["width"], c["depth"], s["T"]
    p = {k: _np(v)[g] for k, v in params.items()}
    integ = orth = 0.0
    for t in range(T):
        keep = s["w"][t] > 0
        x0, xf, y = s["x0"][t][keep], s["xf"][t][keep], s["y"][t][keep]
        fc = relu(x0 @ p["c0.W"][:, :h] + p["c0.b"][0, :h])
        fu = relu(xf @ p["u0.W"][t][:, :h] + p["u0.b"][t][0, :h])
        for l in range(1, L):
            fc = relu(fc @ p[f"c{l}.W"][:h, :h] + p[f"c{l}.b"][0, :h])
            fu = relu(fu @ p[f"u{l}.W"][t][:h, :h] + p[f"u{l}.b"][t][0, :h])
        z = np.hstack([fu, fc])
        ho = relu(z @ _rows2(p["g0.W"], h, H)[:, :h] + p["g0.b"][0, :h])
        hr = relu(z @ _rows2(p["r0.W"][t], h, H)[:, :h] + p["r0.b"][t][0, :h])
        for l in range(1, L):
            hr, ho = (relu(hr @ p[f"r{l}.W"][t][:h, :h] + ho @ p[f"rs{l}.W"][t][:h, :h] + p[f"r{l}.b"][t][0, :h]),
                      relu(ho @ p[f"g{l}.W"][:h, :h] + p[f"g{l}.b"][0, :h]))
        yhat = (np.hstack([hr, ho]) @ _rows2(p["rout.W"][t], h, H)[:, 0] + p["rout.b"][t][0, 0]
                + ho @ p["gout.W"][:h, 0] + p["gout.b"][0, 0])
        integ += np.mean((y - yhat) ** 2)
        orth += np.sum((fc.T @ fu) ** 2)
    imp = sum(np.sum(p["u0.W"][t][s["imputed"][t] > 0, :h] ** 2) for t in range(T))
    dr = 0.0
    for l in range(1, L):
        Wg = p[f"g{l}.W"][:h, :h]
        prods = [Wg.T @ p[f"rs{l}.W"][t][:h, :h] for t in range(T)]
        dr += sum(np.sum(m**2) for m in prods) if dr_mode == "per_task" else np.sum(sum(prods) ** 2)
    ips = [p["rout.W"][t][H:H + h, 0] @ p["gout.W"][:h, 0] for t in range(T)]
    dr += sum(v**2 for v in ips) if dr_mode == "per_task" else sum(ips) ** 2
    return dict(integ=integ, orth=orth, imp=imp, dr=dr)


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2]])  # masked layers / deepest first (prefix path)
@pytest.mark.parametrize("dr_mode", ["per_task", "sum_inside"])
def test_step2_terms_match_direct_computation(step2_setup, dr_mode, order):
    s = dict(step2_setup)
    s["configs"] = [step2_setup["configs"][i] for i in order]
    H, L = 6, 3
    net = Step2Net(s["p0"], s["P"], s["T"], torch.as_tensor(s["imputed"]), H, L, dr_mode)
    params, cfg = net.init(s["configs"], [0, 1, 2], seed=3, dtype=torch.float64)
    batch = {k: torch.as_tensor(s[k]) for k in ("x0", "xf", "y", "w")}
    terms = net.terms(params, cfg, batch)
    total = net.loss(params, cfg, batch)
    for g, c in enumerate(s["configs"]):
        ref = _reference_step2(params, g, c, H, s, dr_mode)
        for name in ("integ", "orth", "imp", "dr"):
            np.testing.assert_allclose(float(terms[name][g]), ref[name], rtol=1e-10, err_msg=f"{name}, config {g}")
        expect = ref["integ"] + c["lambda_orth"] * ref["orth"] + c["lambda_imp"] * ref["imp"] + c["lambda_dr"] * ref["dr"]
        np.testing.assert_allclose(float(total[g]), expect, rtol=1e-10)
    assert float(terms["dr"][0]) > 0 and float(terms["imp"][0]) > 0


def test_r_orth_gram_form_equals_direct_form():
    """||F_c' diag(w) F_u||_F^2 through the B x B Gram matrices equals the h x h product form."""
    gen = torch.Generator().manual_seed(5)
    fc = torch.randn(3, 2, 16, 128, generator=gen, dtype=torch.float64)
    fu = torch.randn(3, 2, 16, 128, generator=gen, dtype=torch.float64)
    w = (torch.rand(2, 16, generator=gen, dtype=torch.float64) > 0.2).to(torch.float64)
    direct = (torch.matmul((fc * w.unsqueeze(-1)).transpose(-1, -2), fu) ** 2).sum((1, 2, 3))
    net = Step2Net(4, 4, 2, torch.zeros(2, 4), 128, 2)
    np.testing.assert_allclose(_np(net.r_orth(fc, fu, w)), _np(direct), rtol=1e-10)


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2]])
def test_step2_depth_skipping_matches_masking(step2_setup, order):
    """Deepest-first groups compute hidden layers on the configurations that use them only; loss
    and gradients equal those of the masked computation (configurations in grid order)."""
    s = step2_setup
    batch = {k: torch.as_tensor(s[k]) for k in ("x0", "xf", "y", "w")}
    net = Step2Net(s["p0"], s["P"], s["T"], torch.as_tensor(s["imputed"]), 6, 3)
    cfgs = [s["configs"][i] for i in order]
    p, c = net.init(cfgs, order, seed=3, dtype=torch.float64)
    p = {k: v.requires_grad_(True) for k, v in p.items()}
    loss = net.loss(p, c, batch)
    grads = torch.autograd.grad(loss.sum(), list(p.values()))
    ref = Step2Net(s["p0"], s["P"], s["T"], torch.as_tensor(s["imputed"]), 6, 3)
    pr, cr = ref.init(s["configs"], [0, 1, 2], seed=3, dtype=torch.float64)
    pr = {k: v.requires_grad_(True) for k, v in pr.items()}
    lr_ = ref.loss(pr, cr, batch)
    gr = torch.autograd.grad(lr_.sum(), list(pr.values()))
    pos = [order.index(i) for i in range(3)]
    np.testing.assert_allclose(_np(loss)[pos], _np(lr_), rtol=1e-12)
    for a, b in zip(grads, gr):
        np.testing.assert_allclose(_np(a)[pos], _np(b), rtol=1e-10, atol=1e-14)


def test_step2_padding_is_exact(step2_setup):
    """A configuration inside a padded group computes what it computes alone."""
    s = step2_setup
    batch = {k: torch.as_tensor(s[k]) for k in ("x0", "xf", "y", "w")}
    group = Step2Net(s["p0"], s["P"], s["T"], torch.as_tensor(s["imputed"]), 6, 3)
    pg, cg = group.init(s["configs"], [0, 1, 2], seed=3, dtype=torch.float64)
    alone = Step2Net(s["p0"], s["P"], s["T"], torch.as_tensor(s["imputed"]), 4, 2)
    pa, ca = alone.init(s["configs"][:1], [0], seed=3, dtype=torch.float64)
    ya = alone.forward(pa, ca, batch["x0"], batch["xf"])[0][0]
    yg = group.forward(pg, cg, batch["x0"], batch["xf"])[0][0]
    np.testing.assert_allclose(_np(yg), _np(ya), rtol=1e-12)
    np.testing.assert_allclose(_np(group.loss(pg, cg, batch))[0], _np(alone.loss(pa, ca, batch))[0], rtol=1e-12)
    # padded weights receive no gradient
    pg = {k: v.requires_grad_(True) for k, v in pg.items()}
    grads = torch.autograd.grad(group.loss(pg, cg, batch).sum(), list(pg.values()))
    gd = dict(zip(pg, grads))
    assert float(gd["c1.W"][0, 4:].abs().sum()) == 0.0 and float(gd["c2.W"][0].abs().sum()) == 0.0
    assert float(gd["c2.W"][2].abs().sum()) == 0.0 and float(gd["c2.W"][1].abs().sum()) > 0


def test_hbi_terms_match_direct_computation():
    rng = np.random.default_rng(1)
    p0, ps, W = 6, 3, 5
    configs = [dict(width=3, depth=2, lambda_orth=1.0), dict(width=5, depth=2, lambda_orth=0.0)]
    net = HBINet(p0, ps, depth=2, width=W, heterogeneous=True, orth_power=1)
    params, cfg = net.init(configs, [0, 1], seed=0, dtype=torch.float64)
    x0t, xst, x0m = rng.normal(size=(9, p0)), rng.normal(size=(9, ps)), rng.normal(size=(13, p0))
    batch = {"x0t": torch.as_tensor(x0t), "xst": torch.as_tensor(xst), "x0m": torch.as_tensor(x0m)}
    terms = net.terms(params, batch)
    loss = net.loss(params, cfg, batch)
    for g, c in enumerate(configs):
        w = c["width"]
        p = {k: _np(v)[g] for k, v in params.items()}
        enc = lambda m, x: relu(x @ p[f"{m}0.W"][:, :w] + p[f"{m}0.b"][0, :w]) @ p[f"{m}1.W"][:w, :w] + p[f"{m}1.b"][0, :w]  # noqa: E731
        dec = lambda z: relu(z @ _rows2(p["D0.W"], w, W) + p["D0.b"][0]) @ p["D1.W"] + p["D1.b"][0]  # noqa: E731
        gen = lambda f: relu(f @ p["G0.W"][:w, :w] + p["G0.b"][0, :w]) @ p["G1.W"][:w] + p["G1.b"][0]  # noqa: E731
        fct, ft, fcm, fm = enc("Ec", x0t), enc("Et", x0t), enc("Ec", x0m), enc("Em", x0m)
        pre = np.mean((gen(fct) - xst) ** 2)
        recon = np.mean((dec(np.hstack([fct, ft])) - x0t) ** 2) + np.mean((dec(np.hstack([fcm, fm])) - x0m) ** 2)
        orth = np.linalg.norm(fct.T @ ft) + np.linalg.norm(fcm.T @ fm)
        np.testing.assert_allclose(float(terms["pre"][g]), pre, rtol=1e-10)
        np.testing.assert_allclose(float(terms["recon"][g]), recon, rtol=1e-10)
        np.testing.assert_allclose(float(terms["orth"][g]), orth, rtol=1e-8)
        np.testing.assert_allclose(float(loss[g]), pre + recon + c["lambda_orth"] * orth, rtol=1e-8)
    naive = HBINet(p0, ps, depth=2, width=W, heterogeneous=False)
    pn, cn = naive.init(configs, [0, 1], seed=0, dtype=torch.float64)
    assert set(naive.terms(pn, batch)) == {"pre"}
    np.testing.assert_allclose(_np(naive.loss(pn, cn, batch)), _np(naive.terms(pn, batch)["pre"]))
