"""Warnings name the user's line: ``sgdlab.errors.warn`` attributes them to the first frame
outside sgdlab and torch, through ``torch.no_grad()`` decorators and internal helpers."""
import errno
import os
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data.registry import load_dataset
from sgdlab.errors import (SEED_LIMIT, ConfigError, UserError, check_config_kind, check_keys,
                           check_not_empty, checked_count_argument, checked_float, checked_int,
                           checked_int_argument,
                           closest_name, config_error,
                           file_problem, human_size, is_seed, name_spelling, registered_spelling,
                           torch_warning_ignored, unexpected_keyword, unknown_key, warn)
from sgdlab.measure.curvature import hessian_eigenpairs
from sgdlab.measure.sharpness import (expected_sharpness, local_entropy, mean_loss,
                                      perturbed_evaluations)
from sgdlab.measure.walk import segment_losses
from sgdlab.operators.params import params_vector


def _origins(call, said: str) -> set[str]:
    """Where the warnings of ``call`` saying ``said`` point (torch may warn of its own)."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        call()
    origins = {m.filename for m in w if said in str(m.message)}
    assert origins, f"the call warned nothing saying {said!r}"
    return origins


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 3)).double().eval()
    data = (torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,)))

    def out_of_memory_above_20(_m, args):        # as a GPU does: the passes retry smaller
        if len(args[0]) > 20:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.register_forward_pre_hook(out_of_memory_above_20)
    theta = params_vector(model)
    xi = 0.01 * torch.randn(3, theta.numel(), dtype=torch.float64)
    return model, nn.CrossEntropyLoss(), data, theta, xi


MEASUREMENTS = {
    "mean_loss": lambda m, f, d, t, xi: mean_loss(m, f, d),
    "perturbed_vmapped": lambda m, f, d, t, xi: perturbed_evaluations(m, f, d, xi),
    "perturbed_pointwise": lambda m, f, d, t, xi: perturbed_evaluations(m, f, d, xi,
                                                                         vectorize=False),
    "expected_sharpness": lambda m, f, d, t, xi: expected_sharpness(m, f, d, 0.01, 3),
    "local_entropy": lambda m, f, d, t, xi: local_entropy(m, f, d, gamma=0.01, num_samples=3),
    "segment_losses": lambda m, f, d, t, xi: segment_losses(m, f, d, t, t + xi[0], 3),
}


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_out_of_memory_retries_are_warned_at_the_callers_line(name):
    # these measurements are torch.no_grad()-decorated: a fixed stacklevel named torch's
    # _contextlib.py as the origin of every retry warning
    model, loss_fn, data, theta, xi = _problem()
    assert _origins(lambda: MEASUREMENTS[name](model, loss_fn, data, theta, xi),
                    "out of memory") == {__file__}


def test_unconverged_lanczos_is_warned_at_the_callers_line():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    data = (torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 3, (20,)))
    assert _origins(lambda: hessian_eigenpairs(model, nn.CrossEntropyLoss(), data, k=3,
                                               num_iter=4, tol=1e-14),
                    "not converged") == {__file__}


def test_ignored_data_dir_is_warned_at_the_callers_line(tmp_path):
    assert _origins(lambda: load_dataset("digits", data_dir=tmp_path),
                    "reads no files") == {__file__}


def test_a_direct_warning_names_this_line():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        warn("a message", RuntimeWarning)
    assert [(m.filename, m.category, str(m.message)) for m in w] == [
        (__file__, RuntimeWarning, "a message")]


def _given_from(module: str, text: str, category=UserWarning) -> None:
    """A warning as the code of ``module`` gives it (its own line 1)."""
    warnings.warn_explicit(text, category, f"{module.replace('.', '/')}.py", 1, module=module)


def test_an_ignored_torch_warning_is_torchs_of_that_category_and_text_alone():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with torch_warning_ignored(r"a (fused|plain) kernel\b", UserWarning):
            _given_from("torch.nn.modules.activation", "a fused kernel ran slowly")    # ignored
            _given_from("torch.nn.functional", "a plain kernel ran slowly")           # ignored
            _given_from("torch.nn.functional", "a fused kernels ran slowly")
            _given_from("torch.nn.functional", "it said a fused kernel ran slowly")
            _given_from("torch.nn.functional", "a fused kernel", RuntimeWarning)
            _given_from("torchvision.ops", "a fused kernel ran slowly")
            _given_from("mymodel", "a fused kernel ran slowly")
        _given_from("torch.nn.functional", "a plain kernel ran slowly")              # after
    assert [(m.category, str(m.message)) for m in w] == [
        (UserWarning, "a fused kernels ran slowly"),
        (UserWarning, "it said a fused kernel ran slowly"),
        (RuntimeWarning, "a fused kernel"),
        (UserWarning, "a fused kernel ran slowly"),
        (UserWarning, "a fused kernel ran slowly"),
        (UserWarning, "a plain kernel ran slowly")]


def test_a_warning_shown_before_an_ignored_torch_warning_is_not_shown_again():
    # leaving a warnings.catch_warnings block voids every module's record of the warnings
    # shown: a warning shown once per location came again after each measurement
    def loss_warns():
        warnings.warn("the loss's own", UserWarning)

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("default")
        for _ in range(3):
            loss_warns()
            with torch_warning_ignored("a fused kernel", UserWarning):
                _given_from("torch.nn.functional", "a fused kernel ran slowly")
    assert [str(m.message) for m in w] == ["the loss's own"]


def test_registered_spelling_finds_the_registered_name_in_either_spelling():
    names = ["entropy_sgd", "random-lr-sgd", "sgd"]
    assert registered_spelling("entropy-sgd", names) == "entropy_sgd"
    assert registered_spelling(" Random_LR_SGD ", names) == "random-lr-sgd"
    assert registered_spelling("sgd", names) == "sgd"
    assert registered_spelling("entropysgd", names) is None        # the separator is needed
    assert registered_spelling(None, names) is None
    # two names one spelling apart: the exact one, else neither (no guess between them)
    assert registered_spelling("a_b", ["a_b", "a-b"]) == "a_b"
    assert registered_spelling("A_B", ["a_b", "a-b"]) is None
    assert name_spelling("Xing_Walk") == "xing-walk"


def test_checked_keywords_keeps_the_function_and_refuses_only_unknown_keywords():
    import inspect
    import pickle

    from sgdlab import measure
    from sgdlab.errors import checked_keywords

    @checked_keywords()
    def own(a, **kw):                   # its **kw are its own: every keyword was refused
        return kw

    assert own(1, anything=2) == {"anything": 2}

    @checked_keywords()
    def positional(a, /, b=1, *rest, scale=1.0):
        """Doc."""
        return a, b, rest, scale

    assert positional(1, 2, 3, scale=2.0) == (1, 2, (3,), 2.0)
    assert positional.__doc__ == "Doc." and positional.__name__ == "positional"
    assert str(inspect.signature(positional)) == "(a, /, b=1, *rest, scale=1.0)"
    with pytest.raises(TypeError, match=r"positional-only arguments passed as keyword"):
        positional(a=1)                 # Python's own words, not "it takes b, scale"
    with pytest.raises(TypeError, match=r"'scal' \(did you mean scale\?\); it takes b, scale"):
        positional(1, scal=2.0)
    # the measurements: their signatures, and pickled by name for a sweep's workers
    fn = measure.hessian_trace
    assert inspect.signature(fn) == inspect.signature(fn.__wrapped__)
    assert pickle.loads(pickle.dumps(fn)) is fn


def test_a_name_cut_short_is_the_one_choice_it_begins_and_only_one():
    # by spelling alone 'cosin' is closer to 'scoping', a name of its length
    assert closest_name("cosin", ["scoping", "cosine-cyclic"]) == "cosine-cyclic"
    assert closest_name("COSIN", ["scoping", "cosine-cyclic"]) == "cosine-cyclic"
    # a prefix that two choices begin, or one under 3 characters, picks none of them
    assert closest_name("sgd", ["sgd-momentum", "sgd-nesterov"]) is None
    assert closest_name("co", ["cosine-cyclic", "xy"]) is None


def test_a_checked_int_is_a_plain_int_at_or_above_its_bound_and_never_a_bool():
    for v in (3, np.int64(3), torch.tensor(3)):
        assert type(checked_int("n", v, 3)) is int and checked_int("n", v, 3) == 3
    assert checked_int("n", None, 1, optional=True) is None
    for v, said in ((2, "got 2"), (np.int64(2), "got 2"), (True, "not a bool (True)"),
                    (np.True_, "not a bool (True)"), (3.0, "got 3.0"), ("3", "got '3'"),
                    (None, "got None")):
        with pytest.raises(UserError, match=re.escape(f"n must be an int >= 3, {said}")):
            checked_int("n", v, 3)
    with pytest.raises(ConfigError, match=re.escape("n must be an int >= 1 (steps), got 0")):
        checked_int("n", 0, 1, " (steps)", optional=True, error=ConfigError)


def test_a_checked_int_argument_is_refused_in_torch_optims_words_as_a_value_error():
    for v in (3, np.int64(3), torch.tensor(3)):
        assert type(checked_int_argument("n", v, 3)) is int
    assert checked_int_argument("n", None, 1, ", or None", optional=True) is None
    for v, got in ((2, "2"), (True, "True"), (3.0, "3.0"), ("3", "'3'"), (None, "None")):
        with pytest.raises(ValueError, match=re.escape(f"Invalid n={got} (an int >= 3: steps)")):
            checked_int_argument("n", v, 3, ": steps")


def test_a_checked_count_argument_is_an_int_from_one_to_its_bound_never_a_bool():
    for v in (1, 4, np.int64(4), torch.tensor(2)):
        assert type(checked_count_argument("k", v, 4, "d")) is int
    for v, got in ((0, "0"), (5, "5"), (True, "True"), (2.0, "2.0"), ("2", "'2'")):
        says = f"Invalid k={got}: need an int 1 <= k <= min(N, d) = 4"
        with pytest.raises(ValueError, match=re.escape(says)):
            checked_count_argument("k", v, 4, "min(N, d)")


def test_a_checked_float_is_a_finite_plain_float_at_or_above_its_bound_and_never_a_bool():
    for v in (0, 0.0, np.float32(0.0), np.int64(0)):         # the bound itself
        assert type(checked_float("c", v)) is float and checked_float("c", v) == 0.0
    assert checked_float("c", np.float32(0.25)) == 0.25
    assert checked_float("c", None, optional=True) is None
    for v, said in ((-1e-300, "got -1e-300"), (np.float32(-0.5), "got -0.5"),
                    (True, "not a bool (True)"), (np.True_, "not a bool (True)"),
                    ("1", "got '1'"), (float("nan"), "got nan"), (float("inf"), "got inf"),
                    (np.float64("inf"), "got np.float64(inf)"), (None, "got None")):
        says = f"c must be a finite number >= 0, {said}"
        with pytest.raises(UserError, match=re.escape(says)):
            checked_float("c", v)
    # strict: the bound itself is refused, just above it taken
    assert checked_float("lr", 5e-324, strict=True) == 5e-324
    with pytest.raises(ConfigError, match=re.escape("lr must be a finite number > 0 (the step), "
                                                    "got 0.0")):
        checked_float("lr", 0.0, what=" (the step)", strict=True, error=ConfigError)
    assert checked_float("x", 1.5, low=1.5) == 1.5
    with pytest.raises(UserError, match=re.escape("x must be a finite number >= 1.5, got 1.49")):
        checked_float("x", 1.49, low=1.5)
    # no bound: any finite number
    assert checked_float("u", -1e300, low=None) == -1e300
    for v, said in ((float("-inf"), "got -inf"), (float("nan"), "got nan"),
                    (False, "not a bool (False)")):
        with pytest.raises(UserError, match=re.escape(f"u must be a finite number, {said}")):
            checked_float("u", v, low=None)


def test_a_seed_is_a_whole_number_of_32_bits_not_a_bool():
    """numpy's legacy seeding takes 0 .. 2**32 - 1."""
    assert SEED_LIMIT == 2 ** 32
    assert is_seed(0) and is_seed(2 ** 32 - 1)
    for bad in (-1, 2 ** 32, True, False, 1.0, "1", None):
        assert not is_seed(bad), bad


def test_unknown_keys_are_named_with_their_path_and_the_closest_or_a_level_down():
    known = ["epochs", "batch_size"]
    assert unknown_key("train", "epohcs", known) == (
        "train.epohcs: unknown key (did you mean epochs?)")
    assert unknown_key("train", "zzz", known) == (
        "train.zzz: unknown key (valid keys: batch_size, epochs)")
    assert unknown_key("", "zzz", []) == "zzz: unknown key (no keys allowed here)"
    # a key of a section one level down, given at the top: its home, not a close spelling
    assert unknown_key("", "epochs", ["experiment"], {"train": known}) == (
        "epochs: unknown key (did you mean train.epochs?)")
    one = config_error(["a: bad"])
    assert isinstance(one, ConfigError) and str(one) == "a: bad"
    assert str(config_error(["a: bad", "b: bad"])) == (
        "2 problems in the config:\n  a: bad\n  b: bad")
    with pytest.raises(ConfigError) as e:
        check_keys("train", ["epochs", "epohcs", "zzz"], known)
    assert str(e.value).startswith("2 problems in the config:\n  train.epohcs: unknown key")


def test_an_empty_config_or_one_of_another_kind_is_named_in_one_line():
    for raw in (None, {}):
        with pytest.raises(ConfigError, match=r"^c\.yaml: the file is empty .* a run config "
                                              r"needs data, model and optimizer"):
            check_not_empty(raw, "run", "c.yaml")
    check_not_empty({"data": {}}, "run", "c.yaml")
    # it had said "runs and scales", which a file of one's own does without
    with pytest.raises(ConfigError, match=r"^e\.yaml: the file is empty .* an experiment config "
                                          r"needs name, version, description, paper and "
                                          r"analysis, and the run parameters in base or runs "
                                          r"\(docs/GUIDE\.md, 'An experiment of your own'"):
        check_not_empty(None, "experiment", "e.yaml")
    with pytest.raises(ConfigError, match=r"^e\.yaml is an experiment config, not a run config "
                                          r"\(it has paper, runs\): run it with `sgdlab run "
                                          r"--config e\.yaml`"):
        check_config_kind({"paper": "x", "runs": []}, "run", "e.yaml")
    # a run config with a stray experiment key is a run config (its key is reported unknown)
    check_config_kind({"optimizer": {}, "paper": "x"}, "run", "c.yaml")


def test_a_file_where_a_folder_is_needed_is_named(tmp_path):
    (tmp_path / "f").write_text("")
    e = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(tmp_path / "f" / "a" / "b"))
    assert file_problem(e) == f"{tmp_path / 'f'} is a file, not a folder"
    e = OSError(errno.EACCES, "Permission denied", str(tmp_path / "x"))
    assert file_problem(e) == "Permission denied"


def test_a_pyhessian_keyword_is_told_its_sgdlab_name():
    assert unexpected_keyword("hessian_trace", "n_v", ["num_probes", "seed"]) == (
        "hessian_trace() got an unexpected keyword argument 'n_v' (PyHessian's n_v is "
        "num_probes here); it takes num_probes, seed")


def test_human_size_moves_to_the_next_decimal_unit_at_each_thousand():
    assert [human_size(n) for n in (1000, 999_900, 1_010_000, 1_000_000_000, 2_000_000_000_000)
            ] == ["1.0 KB", "999.9 KB", "1.0 MB", "1.0 GB", "2.0 TB"]


def test_human_size_rounds_up_into_the_next_unit_rather_than_printing_1000():
    assert [human_size(n) for n in (999_949, 999_950, 999_950_000, 999_960_000_000)] == [
        "999.9 KB", "1.0 MB", "1.0 GB", "1.0 TB"]
