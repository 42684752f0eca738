"""tinycnn.viz: the DOT graph of a known small computation, and the tile layout of the PNG grids."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import tinycnn
from tinycnn import nn
from tinycnn.viz import feature_maps, filters, graph, grid_layout, tile_grid
from tinycnn.viz.feature_maps import PAD_COLOR


# ---------------------------------------------------------------- DOT parsing
NODE = re.compile(r'^\s*(\w+) \[(.*)\];$')
EDGE = re.compile(r'^\s*(\w+) -> (\w+);$')


def parse_dot(text):
    """{id: {"shape":..., "label":..., "filled": bool}}, [(src, dst)] from graph()'s DOT text."""
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    nodes, edges = {}, []
    for line in text.splitlines()[1:-1]:
        if m := EDGE.match(line):
            edges.append((m.group(1), m.group(2)))
        elif (m := NODE.match(line)) and m.group(1) != "node":
            attrs = m.group(2)
            label = re.search(r'label="((?:[^"\\]|\\.)*)"', attrs).group(1)
            shape = re.search(r"shape=(\w+)", attrs).group(1)
            nodes[m.group(1)] = {"shape": shape, "label": label.split("\\n"), "filled": "style=filled" in attrs}
    return nodes, edges


def test_graph_of_known_small_graph_has_expected_nodes_and_edges():
    a = tinycnn.tensor(np.ones((2, 3)), requires_grad=True)
    b = tinycnn.tensor(np.full((3,), 2.0))          # a constant: no gradient
    c = tinycnn.tensor(np.ones((2, 3)), requires_grad=True)
    y = ((a * b + c) * a).sum()                     # `a` used twice: one node, two edges
    nodes, edges = parse_dot(graph(y, params={"a": a, "b": b, "c": c}))
    ids = {nid: n for nid, n in nodes.items()}
    ops = sorted(n["label"][0] for n in ids.values() if n["shape"] == "box")
    assert ops == ["Add", "Mul", "Mul", "Sum"]
    leaves = {n["label"][0]: n for n in ids.values() if n["shape"] == "ellipse"}
    assert set(leaves) == {"a", "b", "c"}
    assert leaves["a"]["label"] == ["a", "(2, 3)", "requires_grad"] and leaves["a"]["filled"]
    assert leaves["b"]["label"] == ["b", "(3)"] and not leaves["b"]["filled"]
    assert leaves["c"]["filled"]
    name = {nid: n["label"][0] for nid, n in ids.items()}
    leaf_id = {n: nid for nid, n in name.items() if n in ("a", "b", "c")}
    [mul1] = [d for s, d in edges if s == leaf_id["b"]]          # a * b
    [mul2] = [nid for nid, n in ids.items() if n["label"][0] == "Mul" and nid != mul1]
    [add] = [nid for nid, n in ids.items() if n["label"][0] == "Add"]
    [sm] = [nid for nid, n in ids.items() if n["label"][0] == "Sum"]
    expected = {(leaf_id["a"], mul1), (leaf_id["b"], mul1), (mul1, add), (leaf_id["c"], add),
                (add, mul2), (leaf_id["a"], mul2), (mul2, sm), (sm, "out")}
    assert sorted(edges) == sorted(expected)
    assert ids[sm]["label"] == ["Sum", "()"] and ids[add]["label"] == ["Add", "(2, 3)"]
    assert ids["out"]["label"] == ["output", "()"]


def test_graph_of_a_model_names_parameters_and_marks_the_input():
    tinycnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    x = tinycnn.randn(1, 1, 4, 4)
    nodes, edges = parse_dot(graph(model(x), params=dict(model.named_parameters())))
    leaves = {n["label"][0]: n for n in nodes.values() if n["shape"] == "ellipse"}
    assert set(leaves) == {"0.weight", "0.bias", "3.weight", "3.bias", "tensor"}
    assert leaves["0.weight"]["label"][1] == "(2, 1, 3, 3)" and leaves["0.weight"]["filled"]
    assert not leaves["tensor"]["filled"]          # the input does not require grad
    assert len(edges) == len({e for e in edges})   # no duplicate edges


def test_graph_of_a_leaf_and_written_dot_file(tmp_path):
    t = tinycnn.tensor([1.0, 2.0], requires_grad=True)
    text = graph(t, path=tmp_path / "g.dot")
    nodes, edges = parse_dot(text)
    assert len(nodes) == 1 and edges == []
    assert (tmp_path / "g.dot").read_text() == text


def test_graph_errors(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="tensor must be a tinycnn Tensor, got ndarray"):
        graph(np.ones(3))
    a = tinycnn.tensor(np.ones(3), requires_grad=True)
    y = (a * a).sum()
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs the Graphviz 'dot' program"):
        graph(y, path=tmp_path / "g.svg")
    y.backward()
    with pytest.raises(RuntimeError, match="graph was freed by backward"):
        graph(y)


# ---------------------------------------------------------------- grids
def count_tiles(path):
    """(rows, cols, n_tiles) of a grid PNG: bands between pure pad-colour lines, non-empty blocks."""
    img = np.asarray(Image.open(path).convert("RGB"))
    content = np.any(img != np.array(PAD_COLOR, np.uint8), axis=2)

    def bands(mask_1d):
        out, start = [], None
        for i, v in enumerate(list(mask_1d) + [False]):
            if v and start is None:
                start = i
            elif not v and start is not None:
                out.append((start, i))
                start = None
        return out

    rows, cols = bands(content.any(axis=1)), bands(content.any(axis=0))
    n = sum(content[r0:r1, c0:c1].any() for r0, r1 in rows for c0, c1 in cols)
    return rows, cols, n


@pytest.mark.parametrize("n,cols,expected", [(1, None, (1, 1)), (5, None, (2, 3)), (8, None, (3, 3)),
                                             (16, None, (4, 4)), (17, None, (4, 5)), (6, 4, (2, 4)),
                                             (3, 10, (1, 3))])
def test_grid_layout(n, cols, expected):
    assert grid_layout(n, cols) == expected


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), h=st.integers(1, 6), w=st.integers(1, 6), scale=st.integers(1, 3),
       pad=st.integers(1, 3), cols=st.one_of(st.none(), st.integers(1, 12)), seed=st.integers(0, 2**16))
def test_tile_grid_property_every_tile_in_its_slot(tmp_path_factory, n, h, w, scale, pad, cols, seed):
    rows, c = grid_layout(n, cols)
    assert rows * c >= n and (rows - 1) * c < n          # no empty row, enough slots
    tiles = np.random.default_rng(seed).integers(0, 255, (n, h, w, 3)).astype(np.uint8)  # never pure white
    pic = tile_grid(tiles, cols=cols, scale=scale, pad=pad)
    th, tw = h * scale, w * scale
    assert pic.shape == (rows * (th + pad) + pad, c * (tw + pad) + pad, 3)
    for i in range(n):
        r, k = divmod(i, c)
        y, x = pad + r * (th + pad), pad + k * (tw + pad)
        np.testing.assert_array_equal(pic[y:y + th:scale, x:x + tw:scale], tiles[i])
    path = tmp_path_factory.mktemp("grid") / "g.png"
    Image.fromarray(pic).save(path)
    rb, cb, count = count_tiles(path)
    assert count == n and len(rb) == rows and len(cb) == c


def test_tile_grid_size_and_placement():
    tiles = np.zeros((5, 2, 3, 3), np.uint8)
    tiles[:, :, :, 0] = np.arange(5)[:, None, None]
    pic = tile_grid(tiles, scale=2, pad=1)
    assert pic.shape == (2 * (4 + 1) + 1, 3 * (6 + 1) + 1, 3)
    # tile 4 sits in row 1, column 1, upscaled 2x
    assert np.all(pic[1 + 5:1 + 5 + 4, 1 + 7:1 + 7 + 6, 0] == 4)
    assert np.all(pic[:, -8:] [6:10] == 255)      # the empty 6th slot stays pad colour
    with pytest.raises(ValueError, match=r"tiles must be a uint8 array of shape \(n, h, w, 3\)"):
        tile_grid(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="scale must be an int >= 1, got 0"):
        tile_grid(tiles, scale=0)


def small_net(k1=8, k2=5):
    tinycnn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, k1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(k1, k2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(k2 * 196, 2))


@pytest.mark.parametrize("layer,k,hw", [("0", 8, 28), ("2", 8, 14), ("3", 5, 14), ("4", 5, 14)])
def test_feature_maps_png_has_one_tile_per_channel(tmp_path, layer, k, hw):
    model = small_net()
    model.train()
    img = np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)
    maps = feature_maps(model, img, layer, path=tmp_path / "fm.png", scale=2, pad=2)
    assert maps.shape == (k, hw, hw) and maps.dtype == np.float32
    rows, cols, n = count_tiles(tmp_path / "fm.png")
    r, c = grid_layout(k)
    assert n == k and len(cols) == c and len(rows) == r
    assert all(b - a == 2 * hw for a, b in rows + cols)
    assert Image.open(tmp_path / "fm.png").size == (c * (2 * hw + 2) + 2, r * (2 * hw + 2) + 2)
    assert model.training                               # restored
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_feature_maps_values_equal_the_layer_output():
    model = small_net()
    img = np.random.default_rng(1).random((1, 1, 28, 28)).astype(np.float32)
    maps = feature_maps(model, tinycnn.tensor(img), model[3])
    with tinycnn.no_grad():
        want = model[3](model[2](model[1](model[0](tinycnn.tensor(img))))).numpy()[0]
    np.testing.assert_array_equal(maps, want)


def test_feature_maps_constant_channel_is_still_a_tile(tmp_path):
    model = small_net(k1=4)
    with tinycnn.no_grad():
        model[0].weight.data[2] = 0.0                   # channel 2 = its bias everywhere
    feature_maps(model, np.random.default_rng(2).random((1, 28, 28)), "0", path=tmp_path / "c.png")
    assert count_tiles(tmp_path / "c.png")[2] == 4


def test_feature_maps_errors():
    model = small_net()
    img = np.zeros((1, 28, 28), np.float32)
    with pytest.raises(ValueError, match="layer 'nope' is not in the model; its layers are: 0, 1, 2"):
        feature_maps(model, img, "nope")
    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\) or \(1, C, H, W\), got shape \(2, 1, 28, 28\)"):
        feature_maps(model, np.zeros((2, 1, 28, 28)), "0")
    with pytest.raises(ValueError, match=r"layer must output \(N, K, h, w\) feature maps, got shape \(1, 2\)"):
        feature_maps(model, img, "6")
    with pytest.raises(TypeError, match="layer must be a Module or a dotted layer name, got int"):
        feature_maps(model, img, 3)
    with pytest.raises(ValueError, match="layer Conv2d is not a submodule of the model"):
        feature_maps(model, img, nn.Conv2d(1, 1, 1))
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match="the layer was not used in the model's forward pass"):
        feature_maps(Skips(), img, "unused")
    with pytest.raises(TypeError, match="model must be a tinycnn Module, got str"):
        feature_maps("model", img, "0")


@pytest.mark.parametrize("o,c,rows,cols", [(8, 1, 3, 3), (6, 1, 2, 3), (5, 8, 5, 8), (3, 2, 3, 2)])
def test_filters_png_layout(tmp_path, o, c, rows, cols):
    tinycnn.manual_seed(0)
    conv = nn.Conv2d(c, o, 3)
    w = filters(conv, path=tmp_path / "f.png", scale=4)
    np.testing.assert_array_equal(w, conv.weight.numpy())
    rb, cb, n = count_tiles(tmp_path / "f.png")
    assert (len(rb), len(cb), n) == (rows, cols, o * c)
    assert all(b - a == 12 for a, b in rb + cb)


def test_filters_colour_follows_the_sign(tmp_path):
    w = np.zeros((2, 1, 1, 2), np.float32)
    w[0, 0, 0] = [1.0, -1.0]
    w[1, 0, 0] = [-0.5, 0.25]
    filters(tinycnn.tensor(w), path=tmp_path / "s.png", scale=1, pad=1)
    img = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(int)
    pos, neg = img[1, 1], img[1, 2]                      # tile 0: +1 then -1 (full colour)
    assert pos[0] > pos[2] + 50 and neg[2] > neg[0] + 50         # red for +, blue for -
    small_neg = img[1, 4]                                # tile 1: -0.5 of its peak |w|=0.5 -> full blue
    np.testing.assert_array_equal(small_neg, neg)


def test_filters_errors():
    with pytest.raises(ValueError, match=r"conv weight must have shape \(O, C, kH, kW\), got shape \(3, 4\)"):
        filters(nn.Linear(4, 3))
    with pytest.raises(TypeError, match="conv must be a Conv2d module or a 4-D weight, got ReLU"):
        filters(nn.ReLU())


def test_graph_shows_number_constants_in_the_op_label():
    a = tinycnn.tensor(np.ones(3), requires_grad=True)
    nodes, edges = parse_dot(graph(((a ** 2) * 3 + 1.5).sum()))
    ops = sorted(n["label"][0] for n in nodes.values() if n["shape"] == "box")
    assert ops == ["Add(., 1.5)", "Mul(., 3)", "Pow(., 2)", "Sum"]
    assert len(edges) == 5                      # leaf->Pow->Mul->Add->Sum->out: constants are not nodes


def test_graph_renders_svg_with_graphviz(tmp_path):
    import shutil
    if shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed (the error path is tested in test_graph_errors)")
    a = tinycnn.tensor(np.ones(3), requires_grad=True)
    text = graph((a * a).sum(), params={"a": a}, path=tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert text.startswith("digraph") and "<svg" in svg and ">Mul<" in svg and ">a<" in svg


def test_cli_predict_writes_feature_maps(tmp_path, capsys):
    from tinycnn.cli import main
    from tinycnn.models import get_model
    from tinycnn.training.checkpoint import save_checkpoint

    tinycnn.manual_seed(0)
    model = get_model("simplecnn", in_channels=1, num_classes=2)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, model, {"model": "simplecnn", "in_channels": 1, "num_classes": 2, "image_size": 28,
                                  "mean": [0.5], "std": [0.25], "class_names": ["a", "b"]})
    imgs = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        Image.fromarray((np.random.default_rng(i).random((28, 28)) * 255).astype(np.uint8)).save(p)
        imgs.append(str(p))
    out = tmp_path / "fm"
    assert main(["predict", "--checkpoint", str(ckpt), *imgs, "--feature-maps", str(out), "--quiet"]) == 0
    assert "feature maps (conv2) written to" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["000_im0_conv2.png", "001_im1_conv2.png"]
    k = model.conv2.weight.shape[0]
    assert count_tiles(out / "000_im0_conv2.png")[2] == k
    assert main(["predict", "--checkpoint", str(ckpt), imgs[0], "--feature-maps", str(out), "--layer", "conv1",
                 "--quiet"]) == 0
    assert count_tiles(out / "000_im0_conv1.png")[2] == model.conv1.weight.shape[0]
    assert main(["predict", "--checkpoint", str(ckpt), imgs[0], "--feature-maps", str(out), "--layer", "nope"]) != 0
    assert "layer 'nope' is not in the model; its layers are: conv1" in capsys.readouterr().err


@pytest.mark.gpu
def test_feature_maps_of_a_cuda_model_equal_cpu(tmp_path):
    model = small_net()
    img = np.random.default_rng(3).random((1, 28, 28)).astype(np.float32)
    want = feature_maps(model, img, "3")
    model.to("cuda")
    got = feature_maps(model, img, "3", path=tmp_path / "g.png")          # host image moved to the model
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert count_tiles(tmp_path / "g.png")[2] == 5
    np.testing.assert_array_equal(filters(model[3]), model[3].weight.numpy())
