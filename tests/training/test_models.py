"""Every family builds, runs forward and backward at two resolutions; configs round-trip."""

import json
import re

import pytest
import torch

from training.config import ModelConfig
from training.errors import UserError
from training.models import build_models, style_ranges
from training.train_config import TrainConfig, resolve_options

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(kind, res, **kw):
    classes = 10 if kind == "cgan" else 0
    return ModelConfig(kind=kind, resolution=res, num_classes=classes, g_width=8, d_width=8,
                       latent_dim=16, **kw)  # fmt: skip


@pytest.mark.parametrize("kind", ["dcgan", "cgan", "stylegan"])
@pytest.mark.parametrize("res", [16, 32])
def test_forward_backward(kind, res):
    cfg = _cfg(kind, res)
    G, D = build_models(cfg)
    z = torch.randn(4, 16)
    labels = torch.tensor([0, 1, 2, 3]) if kind == "cgan" else None
    img = G(z, labels) if labels is not None else G(z)
    assert img.shape == (4, 1, res, res)
    assert img.abs().max() <= 1.0 + 1e-6 or kind == "stylegan"
    logit = D(img, labels) if labels is not None else D(img)
    assert logit.shape == (4,)
    logit.sum().backward()
    for name, module in (("G", G), ("D", D)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} got no gradient"


def test_stylegan_synthesis_and_style_ranges():
    cfg = _cfg("stylegan", 32)
    G, _ = build_models(cfg)
    ws = torch.randn(2, cfg.num_ws, cfg.w_dim)
    noise = G.synthesis.sample_noise(2, generator=torch.Generator().manual_seed(0))
    assert G.synthesis(ws, noise).shape == (2, 1, 32, 32)
    r = style_ranges(cfg.num_ws)
    assert r["coarse"][0] == 0 and r["fine"][1] == cfg.num_ws


@pytest.mark.parametrize("kind", ["dcgan", "cgan", "stylegan"])
def test_model_config_round_trip(kind):
    cfg = _cfg(kind, 32, spectral_norm=True, d_norm="none")
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_train_config_round_trip_and_family_defaults():
    cfg, model_kwargs = resolve_options({"model": "stylegan", "lr": None})
    assert cfg.lr == 4e-3 and cfg.beta1 == 0 and cfg.r1_gamma > 0  # the recipe's stylegan rule
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    wgan, model_kwargs = resolve_options({"model": "dcgan", "loss": "wgan-gp"})
    assert wgan.n_critic == 5 and model_kwargs["d_norm"] == "none"
    explicit, _ = resolve_options({"model": "dcgan", "loss": "wgan-gp", "n_critic": 2})
    assert explicit.n_critic == 2
    with pytest.raises(UserError, match="--d-norm none"):
        resolve_options({"model": "cgan", "loss": "wgan-gp", "d_norm": "batch"})


def test_conditional_batchnorm_generator_is_steered_by_the_label():
    from training.models.dcgan import CBNGenerator, ConditionalBatchNorm2d

    torch.manual_seed(0)  # init and z: the figures below must not depend on the tests before
    cfg = _cfg("cgan", 32, g_cond="cbn")
    G, _ = build_models(cfg)
    assert isinstance(G, CBNGenerator)
    norms = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(norms) == 3  # one after each transposed conv below the output layer
    # Per-class gain N(1, 0.02) and bias 0 at init; the normalisation itself has no affine.
    assert norms[0].norm.weight is None and torch.equal(norms[0].bias.weight, torch.zeros(10, 32))
    assert abs(norms[0].gain.weight.mean().item() - 1.0) < 0.01
    with torch.no_grad():
        for m in norms:  # make the classes differ, as training does
            m.bias.weight.normal_(0.0, 1.0)
    G.eval()
    z = torch.randn(1, 16).expand(2, -1)
    a, b = G(z, torch.tensor([3, 7]))
    # 0.07-0.34 over 30 init seeds (tanh output in [-1, 1]); exactly 0 without the label's
    # gain and bias, as the control below shows.
    assert (a - b).abs().max() > 0.02, "the label does not change the image"
    assert torch.equal(G(z[:1], torch.tensor([3]))[0], a)
    with torch.no_grad():
        for m in norms:  # class 7 given class 3's gain and bias: the same image
            m.gain.weight[7] = m.gain.weight[3]
            m.bias.weight[7] = m.bias.weight[3]
    a, b = G(z, torch.tensor([3, 7]))
    assert torch.equal(a, b)


def test_g_cond_is_validated_and_defaults_to_concat():
    assert ModelConfig(kind="cgan", num_classes=10).g_cond == "concat"  # configs saved before cbn
    with pytest.raises(
        UserError, match=r"g_cond 'film' not allowed; use 'concat' or 'cbn' or 'cbn\+concat'"
    ):
        ModelConfig(kind="cgan", num_classes=10, g_cond="film")


def test_conditional_batchnorm_cgan_exports_with_parity(tmp_path):
    """The exported graph stays generator(z, label:int64) and matches eager within tolerance."""
    import json

    from export.exporter import export_run
    from tests.conftest import train_run

    run = train_run("cgan", tmp_path / "run", g_cond="cbn")
    assert json.loads((run / "config.json").read_text())["model"]["g_cond"] == "cbn"
    bundle = export_run(run, tmp_path / "bundle", formats=("onnx",))
    m = json.loads((bundle / "manifest.json").read_text())
    inputs = m["graphs"]["generator"]["inputs"]
    assert [(i["name"], i["dtype"]) for i in inputs] == [("z", "float32"), ("label", "int64")]
    assert 0 <= m["parity"]["max_abs_diff"] <= 1e-4
    print(f"\ncbn cgan ONNX parity: max abs diff {m['parity']['max_abs_diff']:.2e}")


def test_latent_code_is_read_from_z_and_uniform_with_or_without_truncation():
    from gancore.sampling import z_from_seeds
    from training.models.code import latent_code, with_code

    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 16, generator=g)
    # The seeds the server turns into z, plain and truncated (the rule every bundle follows).
    served = torch.from_numpy(z_from_seeds(range(20_000), 16, truncation=0.5))
    assert served.abs().max() <= 1.0
    for draws in (z, served):
        counts = torch.bincount(latent_code(draws, 10), minlength=10)
        assert counts.shape == (10,) and counts.min() > 1_800 and counts.max() < 2_200, counts
    code = torch.arange(10).repeat(4)
    moved = with_code(z[:40], code, 10)
    assert torch.equal(latent_code(moved, 10), code)
    # Only the first 10 components are permuted, within each row.
    assert torch.equal(moved[:, 10:], z[:40, 10:])
    assert torch.equal(moved[:, :10].sort(dim=1).values, z[:40, :10].sort(dim=1).values)
    with pytest.raises(ValueError, match=r"code values must be in 0\.\.9, got \[3, 10\]"):
        with_code(z[:2], torch.tensor([3, 10]), 10)


def test_dcgan_with_a_latent_code_feeds_it_to_g_and_gives_d_a_code_head():
    from training.models.code import latent_code, with_code

    torch.manual_seed(0)
    cfg = _cfg("dcgan", 32, latent_code=10)
    G, D = build_models(cfg)
    G.eval()
    z = with_code(torch.randn(4, 16), torch.tensor([0, 3, 7, 9]), 10)
    # G's input is z joined to the embedding of the code it reads from z, nothing else.
    code_input = G.code_embed.weight[torch.tensor([0, 3, 7, 9])]
    manual = G.main(torch.cat([z, code_input], dim=1)[:, :, None, None])
    assert torch.equal(G(z), manual) and G.main[0].in_channels == 16 + 10
    x = torch.randn(5, 1, 32, 32)
    logit, code_logits = D.forward_with_code(x)
    assert torch.equal(logit, D(x)) and code_logits.shape == (5, 10)
    assert latent_code(torch.randn(5, 16), 10).dtype == torch.int64
    plain_g, plain_d = build_models(_cfg("dcgan", 32))
    assert plain_g.code_embed is None and plain_d.code_head is None


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"kind": "cgan", "num_classes": 10, "latent_code": 10}, "latent_code 10 not allowed"),
        ({"kind": "stylegan", "num_classes": 10, "latent_code": 10}, "unconditional dcgan and"),
        ({"kind": "dcgan", "latent_code": 1}, "from 2 to latent_dim"),
        ({"kind": "dcgan", "latent_code": 20, "latent_dim": 16}, "latent_dim (16)"),
    ],
)
def test_latent_code_is_validated(kw, message):
    with pytest.raises(UserError, match=re.escape(message)):
        ModelConfig(**kw)


def test_dcgan_with_a_latent_code_trains_logs_and_exports_with_parity(tmp_path):
    """A run with --latent-code logs D's code loss, draws its sample grid one row per code
    value, and exports as generator(z) alone, matching eager within tolerance."""
    from export.exporter import export_run
    from tests.conftest import train_run

    run = train_run("dcgan", tmp_path / "run", latent_code=10, log_every=1)
    assert json.loads((run / "config.json").read_text())["model"]["latent_code"] == 10
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    code_losses = [r["loss_code"] for r in records if "loss_code" in r]
    # Cross-entropy over 10 values: about ln 10 = 2.3 before D has learnt to read the code.
    assert code_losses and all(0 < v < 5 for v in code_losses), code_losses
    from PIL import Image

    # 8 columns and 10 rows (one per code value) of equal cells, where a plain DCGAN has 8 x 8.
    width, height = Image.open(sorted((run / "samples").glob("grid-*.png"))[-1]).size
    assert (width - 2) / 8 == (height - 2) / 10, (width, height)
    bundle = export_run(run, tmp_path / "bundle", formats=("onnx",))
    m = json.loads((bundle / "manifest.json").read_text())
    inputs = m["graphs"]["generator"]["inputs"]
    assert [(i["name"], i["dtype"]) for i in inputs] == [("z", "float32")]
    assert 0 <= m["parity"]["max_abs_diff"] <= 1e-4


def test_code_loss_reaches_d_in_the_d_step_and_g_in_the_g_step(tmp_path):
    """The InfoGAN term is in both players' losses: with weight 0 D's code head gets no
    gradient and G's gradient is the adversarial one alone; with weight 0.5 both change."""
    from training.datasets import load_dataset
    from training.trainer import Trainer

    cfg, model_kwargs = resolve_options({"model": "dcgan", "dataset": "digits", "resolution": 16,
        "batch_size": 16, "instance_noise": 0, "eval_every": 0, "g_width": 8, "d_width": 8,
        "latent_dim": 16, "latent_code": 10})  # fmt: skip
    model_cfg = ModelConfig(kind="dcgan", resolution=16, **model_kwargs)
    t = Trainer(cfg, model_cfg, load_dataset("digits", 16, "train"), tmp_path, progress=False)
    t.opt_D.step = t.opt_G.step = lambda: None  # gradients only: the weights stay as they are
    real, _ = t.data.next()
    z, _ = t.sample_latents(16)
    d_grads, g_grads = {}, {}
    for weight in (0.0, 0.5):
        t.cfg.code_weight = weight
        fake = t.generate(z, None)
        t.d_step(real, None, fake.detach(), None, z)
        d_grads[weight] = t.D.code_head.weight.grad.clone()
        t.g_step(fake, None, z)
        g_grads[weight] = t.G.code_embed.weight.grad.clone()
    assert d_grads[0.0].abs().max() == 0 and d_grads[0.5].abs().max() > 0
    assert not torch.allclose(g_grads[0.0], g_grads[0.5])


def test_stylegan_with_a_latent_code_maps_it_with_z_and_gives_d_a_code_head():
    """StyleGAN-lite reads the code from z like the DCGAN: the mapping takes z joined to the
    code's embedding (as a class label would be), and D gets a head that reads the code."""
    import torch.nn.functional as F

    from training.models.code import with_code
    from training.models.stylegan import SQRT2, normalize_2nd_moment

    torch.manual_seed(0)
    G, D = build_models(_cfg("stylegan", 16, latent_code=10))
    z = with_code(torch.randn(4, 16), torch.tensor([0, 3, 7, 9]), 10)
    onehot = F.one_hot(torch.tensor([0, 3, 7, 9]), 10).float()
    x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(G.mapping.code_embed(onehot))], 1)
    for layer in G.mapping.layers:
        x = F.leaky_relu(layer(x), 0.2) * SQRT2
    assert torch.allclose(G.mapping(z), x, atol=1e-6)
    # The code, not the rest of z, is what the embedding sees: another code, another w.
    other = with_code(z, torch.tensor([1, 1, 1, 1]), 10)
    assert not torch.allclose(G.mapping(other)[1:], G.mapping(z)[1:])
    img = G(z)
    logit, code_logits = D.forward_with_code(img)
    assert torch.equal(logit, D(img)) and code_logits.shape == (4, 10)
    plain_g, plain_d = build_models(_cfg("stylegan", 16))
    assert plain_g.mapping.code_embed is None and plain_d.code_head is None


def test_stylegan_style_mixing_keeps_the_code_of_the_first_latent(tmp_path):
    """Style mixing draws a second latent for the later layers; with a latent code it carries the
    first latent's code, so every layer of an image is asked for the code D must read."""
    from training.datasets import load_dataset
    from training.models.code import latent_code
    from training.trainer import Trainer

    cfg, model_kwargs = resolve_options({"model": "stylegan", "dataset": "digits",
        "resolution": 16, "batch_size": 32, "eval_every": 0, "g_width": 8, "d_width": 8,
        "latent_dim": 16, "latent_code": 10, "style_mixing": 1.0})  # fmt: skip
    model_cfg = ModelConfig(kind="stylegan", resolution=16, **model_kwargs)
    t = Trainer(cfg, model_cfg, load_dataset("digits", 16, "train"), tmp_path, progress=False)
    seen = []
    mapping = t.G.mapping.forward
    t.G.mapping.forward = lambda z, label=None: (seen.append(z), mapping(z, label))[1]
    z, _ = t.sample_latents(32)
    t.generate(z, None)
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    assert torch.equal(latent_code(seen[1], 10), latent_code(z, 10))


def test_stylegan_with_a_latent_code_trains_and_exports_mapping_z_alone(tmp_path):
    from export.exporter import export_run
    from tests.conftest import train_run

    run = train_run("stylegan", tmp_path / "run", latent_code=10, log_every=1)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    code_losses = [r["loss_code"] for r in records if "loss_code" in r]
    assert code_losses and all(0 < v < 5 for v in code_losses), code_losses
    bundle = export_run(run, tmp_path / "bundle", formats=("onnx",))
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["latent_code"] == 10
    assert [i["name"] for i in m["graphs"]["mapping"]["inputs"]] == ["z"]
    assert 0 <= m["parity"]["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("kind", ["dcgan", "stylegan"])
def test_mode_seeking_pairs_share_the_latent_code(tmp_path, kind):
    """With a latent code and --mode-seeking, the pairs (i, i + n/2) the term compares carry the
    same code (as a cGAN's pairs carry one class), so it spreads the images of one code apart;
    without mode seeking z is drawn as before."""
    from training.datasets import load_dataset
    from training.models.code import latent_code
    from training.trainer import Trainer

    def trainer(**kw):
        cfg, model_kwargs = resolve_options({"model": kind, "dataset": "digits",
            "resolution": 16, "batch_size": 32, "eval_every": 0, "g_width": 8, "d_width": 8,
            "latent_dim": 16, "latent_code": 10, **kw})  # fmt: skip
        model_cfg = ModelConfig(kind=kind, resolution=16, **model_kwargs)
        return Trainer(cfg, model_cfg, load_dataset("digits", 16, "train"), tmp_path)

    z, _ = trainer(mode_seeking=0.2).sample_latents(32)
    assert torch.equal(latent_code(z[:16], 10), latent_code(z[16:], 10))
    assert not torch.equal(z[:16, 10:], z[16:, 10:])
    plain, _ = trainer(mode_seeking=0).sample_latents(32)
    assert not torch.equal(latent_code(plain[:16], 10), latent_code(plain[16:], 10))
