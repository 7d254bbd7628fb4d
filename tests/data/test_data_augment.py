"""Mini-batch augmentation: crops of zero-padded images, mirror flips, the augment= option."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sgdlab.data import Dataset, load_dataset
from sgdlab.data.augment import augment_batch, batch_augmentation
from sgdlab.errors import UserError


def images(n=16, c=2, h=5, w=6, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) + 0.5


def candidates(img: torch.Tensor, padding: int) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every crop of the zero-padded image, mirrored or not, by (row offset, col offset, flip)."""
    _, h, w = img.shape
    p = F.pad(img, (padding,) * 4)
    out = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = p[:, dy:dy + h, dx:dx + w]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop.flip(-1)
    return out


def test_each_image_is_a_crop_of_its_padded_self_mirrored_or_not():
    x = images()
    out = augment_batch(x, torch.Generator().manual_seed(3), padding=2, flip=0.5)
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = []
    for img, aug in zip(x, out):
        hits = [k for k, v in candidates(img, 2).items() if torch.equal(v, aug)]
        assert len(hits) == 1, hits          # random pixel values: exactly one explanation
        seen.append(hits[0])
    assert len(set(seen)) > 8                # the 16 images are not all treated alike
    assert {k[2] for k in seen} == {False, True}


def test_offsets_and_flips_follow_their_distributions():
    base = torch.arange(1, 82, dtype=torch.float32).reshape(1, 9, 9)  # every crop distinct
    keys, cands = zip(*candidates(base, 4).items())
    cands = torch.stack(cands).reshape(len(cands), -1)
    x = base.expand(4000, 1, 9, 9)
    out = augment_batch(x, torch.Generator().manual_seed(0), padding=4, flip=0.5)
    match = (out.reshape(4000, 1, -1) == cands[None]).all(dim=-1)
    assert torch.all(match.sum(dim=1) == 1)
    drawn = [keys[k] for k in match.float().argmax(dim=1).tolist()]
    for axis in (0, 1):   # row and column offsets uniform on 0..8 (444 expected, sd 20)
        counts = torch.bincount(torch.tensor([k[axis] for k in drawn]), minlength=9)
        assert counts.min() > 360 and counts.max() < 530, counts
    mirrored = sum(k[2] for k in drawn) / 4000
    assert 0.46 < mirrored < 0.54
    # without padding and flips: the identity; no random numbers are drawn
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    assert torch.equal(augment_batch(x, g, padding=0, flip=0.0), x)
    assert torch.equal(g.get_state(), state)


def test_reproducible_from_the_generator_seed_only():
    x = images()
    a = augment_batch(x, torch.Generator().manual_seed(7))
    b = augment_batch(x, torch.Generator().manual_seed(7))
    c = augment_batch(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the draws do not depend on the pixel values: other images get the same crops
    y = images(seed=1)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    augment_batch(x, g1)
    augment_batch(y, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_augment_option_records_the_augmentation_and_keeps_the_tensors():
    plain = load_dataset("digits")
    ds = load_dataset("digits", augment="crop-flip")
    assert ds.meta["augment"] == {"name": "crop-flip", "padding": 4, "flip": 0.5}
    assert torch.equal(ds.x_train, plain.x_train) and torch.equal(ds.y_train, plain.y_train)
    assert batch_augmentation(plain) is None
    f = batch_augmentation(load_dataset("digits", augment="flip"))
    x = plain.x_train[:64]
    out = f(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) and not torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x))
    assert 10 < sum(flipped) < 54
    sub = load_dataset("digits", augment="crop", n_train=100, classes=[1, 2])
    assert sub.meta["augment"]["flip"] == 0.0 and len(sub.y_train) == 100


def test_augment_option_errors():
    with pytest.raises(UserError, match=r"one of crop-flip, crop, flip, got 'crop_flip' "
                                        r"\(did you mean crop-flip\?\)"):
        load_dataset("digits", augment="crop_flip")
    with pytest.raises(UserError, match=r"images shaped \(C, H, W\); dataset 'digits' has "
                                        r"inputs shaped \(64,\) \(drop flatten=True\)"):
        load_dataset("digits", flatten=True, augment="crop-flip")
    with pytest.raises(UserError, match=r"dataset 'cubic' has inputs shaped \(1,\)"):
        load_dataset("cubic", augment="flip")
    with pytest.raises(UserError, match=r"'mnist1d' has inputs shaped \(1, 40\)"):
        load_dataset("mnist1d", augment="crop")


def test_augmentation_reads_only_meta():
    ds = Dataset(images(), torch.zeros(16, dtype=torch.long), images(2), torch.zeros(2),
                 {"augment": {"name": "crop", "padding": 1, "flip": 0.0}})
    out = batch_augmentation(ds)(ds.x_train, torch.Generator().manual_seed(0))
    for img, aug in zip(ds.x_train, out, strict=True):
        assert any(torch.equal(v, aug) for k, v in candidates(img, 1).items() if not k[2])


def test_a_flip_probability_other_than_a_half_mirrors_that_fraction():
    # at 0.5 mirroring with probability p and with 1 − p look alike; 0.25 tells them apart
    x = torch.arange(1, 7, dtype=torch.float32).reshape(1, 1, 1, 6).expand(4000, 1, 1, 6)
    out = augment_batch(x, torch.Generator().manual_seed(0), padding=0, flip=0.25)
    mirrored = (out == x.flip(-1)).all(dim=-1).flatten()
    assert torch.all(mirrored | (out == x).all(dim=-1).flatten())
    assert 0.22 < mirrored.double().mean() < 0.28          # 1000 expected, sd 27
    assert torch.all(augment_batch(x[:50], torch.Generator(), padding=0, flip=1.0)
                     == x[:50].flip(-1))


def test_a_padding_of_one_pixel_crops_at_offsets_0_1_2():
    base = torch.arange(1, 10, dtype=torch.float32).reshape(1, 3, 3)
    keys, cands = zip(*((k, v) for k, v in candidates(base, 1).items() if not k[2]))
    cands = torch.stack(cands).reshape(len(cands), -1)
    out = augment_batch(base.expand(900, 1, 3, 3), torch.Generator().manual_seed(0), padding=1,
                        flip=0.0)
    match = (out.reshape(900, 1, -1) == cands[None]).all(dim=-1)
    assert torch.all(match.sum(dim=1) == 1)
    drawn = [keys[k] for k in match.float().argmax(dim=1).tolist()]
    for axis in (0, 1):   # 300 expected each, sd 14
        counts = torch.bincount(torch.tensor([k[axis] for k in drawn]), minlength=3)
        assert len(counts) == 3 and counts.min() > 240, counts


def test_an_augment_value_that_is_not_a_name_is_a_user_error():
    from sgdlab.data.augment import augmentation_spec

    for bad in (["crop-flip"], {"name": "crop"}, None, 4):
        with pytest.raises(UserError, match="option 'augment' must be one of crop-flip, crop"):
            augmentation_spec(bad)
    # an empty record asks for no augmentation
    ds = Dataset(images(), torch.zeros(16, dtype=torch.long), images(2), torch.zeros(2),
                 {"augment": {}})
    assert batch_augmentation(ds) is None


def test_the_draws_are_row_offsets_column_offsets_then_flips_from_the_generator():
    # the protocol a recorded run's crops depend on: randint(0, 2p + 1, (2, n)) gives the row
    # offsets then the column offsets, then rand(n) < flip the mirrored images
    x = images(n=12, c=1, h=4, w=5)
    out = augment_batch(x, torch.Generator().manual_seed(7), padding=2, flip=0.5)
    g = torch.Generator().manual_seed(7)
    off = torch.randint(0, 5, (2, 12), generator=g)
    mirror = torch.rand(12, generator=g) < 0.5
    assert 0 < int(mirror.sum()) < 12 and not torch.equal(off[0], off[1])
    for i in range(12):
        crop = F.pad(x[i], (2,) * 4)[:, off[0, i]:off[0, i] + 4, off[1, i]:off[1, i] + 5]
        assert torch.equal(out[i], crop.flip(-1) if mirror[i] else crop)
