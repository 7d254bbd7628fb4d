"""VGG-11 / VGG-16 (Simonyan & Zisserman 2015) in their CIFAR form.

3x3 convolutions (padding 1) with optional BatchNorm and ReLU, 2x2 max-pooling after each
stage, then a single ``Linear(512 -> classes)`` classifier, the usual CIFAR adaptation (the
ImageNet version's three 4096-wide layers would dwarf the convolutions on 1x1 maps). With
BatchNorm and 10 classes: VGG-11 9,231,114 and VGG-16 14,728,266 parameters; without BN
9,225,610 and 14,719,818. ``classifier_widths`` inserts hidden ReLU layers before the output
layer: VGG-11 without BN and ``classifier_widths=[512, 512]`` has the 9,750,922 parameters
Zhu et al. (2019, Suppl. D) state for their VGG11. Five pooling stages need inputs of at
least 32x32.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import UserError
from .registry import check_positive, flat_size, image_shape, register_model

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], input_shape, num_outputs: int, *,
                 batchnorm: bool = True, classifier_widths: Sequence[int] = (),
                 name: str = "vgg") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = input_shape[0]
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(nn.Conv2d(prev, int(v), 3, padding=1))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(int(v)))
                layers.append(nn.ReLU())
                prev = int(v)
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        n = flat_size(self.features, tuple(input_shape), name)
        head: list[nn.Module] = []
        for w in classifier_widths:
            head += [nn.Linear(n, int(w)), nn.ReLU()]
            n = int(w)
        self.classifier = nn.Sequential(*head, nn.Linear(n, num_outputs)) if head \
            else nn.Linear(n, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _register(key: str, label: str) -> None:
    @register_model(key.replace("vgg", "vgg-"), paper="Simonyan & Zisserman 2015 (CIFAR form)",
                    description=f"{label} for CIFAR: 3x3 convs (+BN), linear classifier",
                    reference_input=(3, 32, 32),
                    notes="Linear(512, classes) classifier (classifier_widths adds hidden "
                          "layers); BatchNorm on by default")
    def build(input_shape, num_outputs, *, batchnorm: bool = True,
              classifier_widths: Sequence[int] = ()) -> nn.Module:
        name = key.replace("vgg", "vgg-")
        if isinstance(classifier_widths, (str, bytes)) or \
                not isinstance(classifier_widths, Sequence):
            raise UserError(f"option 'classifier_widths' must be a list of hidden widths, "
                            f"got {classifier_widths!r}")
        classifier_widths = [check_positive(f"classifier_widths[{i}]", w)
                             for i, w in enumerate(classifier_widths)]
        return VGG(CONFIGS[key], image_shape(name, input_shape), num_outputs,
                   batchnorm=batchnorm, classifier_widths=classifier_widths, name=name)


_register("vgg11", "VGG-11")
_register("vgg16", "VGG-16")
