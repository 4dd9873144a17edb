"""Module system: registration, traversal, modes, conversion, state dicts, containers."""

from collections import OrderedDict

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn


class Block(nn.Module):
    """Two layers and a free parameter, registered in a deliberately non-alphabetical order."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.scale = nn.Parameter(np.ones(4, dtype=np.float32))
        self.act = nn.Tanh()
        self.out = nn.Linear(4, 2, bias=False)
        self.not_a_param = np.zeros(3)  # plain attributes are not registered

    def forward(self, x):
        return self.out(self.act(self.proj(x)) * self.scale)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.z_first = nn.Linear(2, 3)
        self.block = Block()
        self.a_last = nn.LSTM(2, 3)
        self.tied = self.z_first  # the same module registered twice


EXPECTED_NAMES = [
    "z_first.weight", "z_first.bias",
    "block.scale", "block.proj.weight", "block.proj.bias", "block.out.weight",
    "a_last.weight_ih_l0", "a_last.weight_hh_l0", "a_last.bias_ih_l0", "a_last.bias_hh_l0",
]


def test_named_parameters_order_and_dotted_names():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == EXPECTED_NAMES
    assert list(net.state_dict()) == EXPECTED_NAMES
    assert [id(p) for p in net.parameters()] == [id(p) for _, p in net.named_parameters()]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())


def test_order_is_deterministic_across_instances():
    assert [n for n, _ in Net().named_parameters()] == [n for n, _ in Net().named_parameters()]


def test_shared_parameter_reported_once():
    net = Net()
    params = list(net.parameters())
    assert len(params) == len({id(p) for p in params}) == 10
    # weight tying across modules: the second owner's name is dropped, as in PyTorch
    head = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    head[1].weight = head[0].weight
    assert [n for n, _ in head.named_parameters()] == ["0.weight"]
    assert list(head.state_dict()) == ["0.weight"]


def test_recurse_false_and_prefix():
    block = Block()
    assert [n for n, _ in block.named_parameters(recurse=False)] == ["scale"]
    names = [n for n, _ in block.named_parameters(prefix="enc")]
    assert names[:2] == ["enc.scale", "enc.proj.weight"]


def test_children_and_modules():
    net = Net()
    children = list(net.children())
    assert [type(c).__name__ for c in children] == ["Linear", "Block", "LSTM"]
    assert [n for n, _ in net.named_children()] == ["z_first", "block", "a_last"]  # tied once
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "z_first", "block", "block.proj", "block.act", "block.out", "a_last"]
    assert list(net.modules())[0] is net


def test_assignment_replaces_and_none_unregisters():
    block = Block()
    block.out = nn.Linear(4, 6)
    assert [n for n, _ in block.named_parameters()][-2:] == ["out.weight", "out.bias"]
    block.scale = None
    assert "scale" not in [n for n, _ in block.named_parameters()]
    with pytest.raises(TypeError, match="scale"):
        block.scale = np.ones(4)
    del block.act
    assert "act" not in dict(block.named_children())


def test_setattr_before_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Broken()


def test_register_parameter_and_add_module():
    m = nn.Module()
    m.register_parameter("w", nn.Parameter(np.zeros(2, dtype=np.float32)))
    m.add_module("sub", nn.Linear(2, 1))
    m.register_parameter("absent", None)
    assert [n for n, _ in m.named_parameters()] == ["w", "sub.weight", "sub.bias"]
    assert m.absent is None


def test_train_eval_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.block.train(False)
    assert net.training and not net.block.training and not net.block.proj.training


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    net = Block()
    net(tg.randn(2, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=set_to_none)
    for p in net.parameters():
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is not None and p.grad.shape == p.shape and not p.grad.numpy().any()


def test_zero_grad_default_is_set_to_none():
    net = nn.Linear(2, 2)
    net(tg.randn(1, 2)).sum().backward()
    net.zero_grad()
    assert net.weight.grad is None


def test_to_cpu_and_float_double_keep_parameter_identity(device):
    net = Net().to(device)
    before = list(net.parameters())
    net.z_first(tg.randn(1, 2, device=device)).sum().backward()
    assert net.double() is net
    after = list(net.parameters())
    assert all(a is b for a, b in zip(before, after))
    assert all(p.dtype == np.float64 for p in after)
    assert net.z_first.weight.grad.dtype == np.float64  # grads follow their parameter
    out, _ = net.a_last(tg.randn(3, 1, 2, dtype="float64", device=device))
    assert out.dtype == np.float64
    net.float()
    assert all(p is q for p, q in zip(before, net.parameters()))
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to("cpu")
    assert all(p.device == "cpu" for p in net.parameters())
    assert all(p is q for p, q in zip(before, net.parameters()))
    net.to(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    with pytest.raises(TypeError, match="floating point"):
        net.to(dtype=np.int32)


def test_apply_visits_children_first_then_self():
    net = Net()
    visited = []
    assert net.apply(lambda m: visited.append(type(m).__name__)) is net
    assert visited == ["Linear", "Linear", "Tanh", "Linear", "Block", "LSTM", "Net"]

    def init_zero(m):
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)

    net.apply(init_zero)
    assert not net.block.proj.weight.numpy().any() and not net.z_first.weight.numpy().any()


def test_repr_is_readable():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.2),
                          nn.LSTM(4, 8, num_layers=2, batch_first=True))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (1): Tanh()\n"
        "  (2): Dropout(p=0.2)\n"
        "  (3): LSTM(4, 8, num_layers=2, batch_first=True)\n"
        ")")
    text = repr(Net())
    assert text.startswith("Net(\n  (z_first): Linear(in_features=2, out_features=3, bias=True)")
    assert "  (block): Block(\n    (proj): Linear(in_features=3, out_features=4, bias=True)" in text
    assert "(a_last): LSTM(2, 3)" in text
    assert repr(nn.GRU(3, 4, num_layers=2, bias=False, dropout=0.5, bidirectional=True)) == (
        "GRU(3, 4, num_layers=2, bias=False, dropout=0.5, bidirectional=True)")
    assert repr(nn.LSTM(3, 4, proj_size=2)) == "LSTM(3, 4, proj_size=2)"
    assert repr(nn.RNNCell(3, 4, bias=False)) == "RNNCell(3, 4, bias=False)"
    assert repr(nn.Embedding(5, 3, padding_idx=0)) == "Embedding(5, 3, padding_idx=0)"
    assert repr(nn.Parameter(np.zeros(2, dtype=np.float32))).startswith("Parameter containing:")


# --------------------------------------------------------------------------- state dicts


def test_state_dict_is_an_ordered_copy():
    net = Net()
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict)
    assert all(type(v) is np.ndarray for v in sd.values())
    before = net.block.proj.weight.numpy().copy()
    sd["block.proj.weight"][...] = 123.0
    np.testing.assert_array_equal(net.block.proj.weight.numpy(), before)
    for (name, p), (key, value) in zip(net.named_parameters(), sd.items()):
        assert name == key and value.shape == p.shape and value.dtype == p.dtype


def test_load_state_dict_roundtrip_numpy_and_tensors():
    tg.manual_seed(0)
    src, dst = Net(), Net()
    assert not np.array_equal(src.block.proj.weight.numpy(), dst.block.proj.weight.numpy())
    weight_before = dst.block.proj.weight
    result = dst.load_state_dict(src.state_dict())
    assert result == ([], [])
    assert dst.block.proj.weight is weight_before  # values copied into the same Parameter
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        np.testing.assert_array_equal(a, b)
    dst2 = Net()
    dst2.load_state_dict({k: tg.Tensor(v) for k, v in src.state_dict().items()})
    np.testing.assert_array_equal(dst2.a_last.weight_hh_l0.numpy(), src.a_last.weight_hh_l0.numpy())


def test_load_state_dict_casts_to_parameter_dtype():
    net = nn.Linear(3, 2)
    sd = {"weight": np.arange(6, dtype=np.float64).reshape(2, 3) / 7, "bias": np.array([1, 2])}
    net.load_state_dict(sd)
    assert net.weight.dtype == np.float32 and net.bias.dtype == np.float32
    np.testing.assert_array_equal(net.weight.numpy(), (np.arange(6).reshape(2, 3) / 7).astype("f4"))
    np.testing.assert_array_equal(net.bias.numpy(), [1.0, 2.0])


def test_load_state_dict_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, num_layers=2).double()
    ours = nn.LSTM(3, 4, num_layers=2)  # float32: values are cast
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy().astype(np.float32))


def test_load_state_dict_errors_name_keys_and_shapes():
    net = nn.Linear(3, 2)
    good = net.state_dict()
    before = net.weight.numpy().copy()

    missing = {"weight": good["weight"]}
    with pytest.raises(KeyError, match=r"missing keys: bias \(2,\)"):
        net.load_state_dict(missing)

    unexpected = dict(good, extra=np.zeros((5, 1)))
    with pytest.raises(KeyError, match=r"unexpected keys: extra \(5, 1\)"):
        net.load_state_dict(unexpected)

    wrong = {"weight": np.zeros((3, 2)), "bias": good["bias"]}
    with pytest.raises(KeyError, match=r"weight: expected \(2, 3\), got \(3, 2\)"):
        net.load_state_dict(wrong)
    with pytest.raises(KeyError, match=r"weight: expected \(2, 3\), got \(3, 2\)"):
        net.load_state_dict(wrong, strict=False)  # a wrong shape always raises

    both = {"weight": np.ones((2, 3)), "stray": np.zeros(4)}
    with pytest.raises(KeyError) as info:
        net.load_state_dict(both)
    assert "bias (2,)" in str(info.value) and "stray (4,)" in str(info.value)
    assert "Linear" in str(info.value)
    np.testing.assert_array_equal(net.weight.numpy(), before)  # nothing written on error


def test_load_state_dict_non_strict_returns_missing_and_unexpected():
    net = nn.Linear(3, 2)
    missing, unexpected = net.load_state_dict(
        {"weight": np.ones((2, 3)), "stray": np.zeros(1)}, strict=False)
    assert missing == ["bias"] and unexpected == ["stray"]
    np.testing.assert_array_equal(net.weight.numpy(), np.ones((2, 3)))


# --------------------------------------------------------------------------- containers


def test_sequential():
    tg.manual_seed(1)
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU)
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = tg.randn(5, 3)
    expected = seq[2](seq[1](seq[0](x)))
    np.testing.assert_array_equal(seq(x).numpy(), expected.numpy())
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is seq[0]
    seq.append(nn.Tanh())
    assert len(seq) == 4 and [n for n, _ in seq.named_children()][-1] == "3"
    named = nn.Sequential(OrderedDict([("enc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert [n for n, _ in named.named_parameters()] == ["enc.weight", "enc.bias"]


def test_module_list():
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 3)])
    layers.append(nn.Tanh()).extend([nn.Linear(3, 1)])
    assert len(layers) == 4 and isinstance(layers[-1], nn.Linear)
    assert [n for n, _ in layers.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    replacement = nn.Linear(2, 2, bias=False)
    layers[0] = replacement
    assert layers[0] is replacement
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "1.weight"]
    assert isinstance(layers[1:], nn.ModuleList) and len(layers[1:]) == 3

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))

    assert [n for n, _ in Stack().named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]


def test_forward_not_defined():
    with pytest.raises(NotImplementedError, match="Module must define forward"):
        nn.Module()(1)
