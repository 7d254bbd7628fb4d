"""Importing the landscapes (a landscape experiment's driver and workers do) leaves scipy to the
solvers that call it (``solve_*_lyapunov``, ``solve_sylvester``): scipy.linalg alone took
~0.3 s of CPU after torch."""
from sgdlab.testing import fresh_python


def test_importing_the_landscapes_imports_no_scipy_until_a_solver_runs():
    code = ("import sys\n"
            "import sgdlab.landscapes, sgdlab.landscapes.escape\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy')[:3])\n"
            "from sgdlab.landscapes.linear_potential import linear_potential\n"
            "import torch\n"
            "p = linear_potential(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.eye(2))\n"
            "print('scipy.linalg' in sys.modules, p.U.dtype)\n")
    assert fresh_python(code).splitlines() == ["[]", "True torch.float64"]
