"""Parameter counts of single layers, for deriving architectures' counts by hand in the tests."""


def dense(i: int, o: int) -> int:
    return i * o + o


def conv(ci: int, co: int, k: int, bias: bool = True) -> int:
    return ci * co * k * k + (co if bias else 0)


def bn(c: int) -> int:
    return 2 * c
