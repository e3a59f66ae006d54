"""OpenSim's one-variable functions, in PyTorch, evaluated on batches.

They turn coordinate values into joint rotations and translations (the
`TransformAxis` functions of a CustomJoint) and dependent coordinates (the
function of a CoordinateCouplerConstraint).  Spline coefficients are computed
once in float64 with OpenSim's own algorithms, so values match OpenSim's
`calcValue` to rounding, including its linear extrapolation outside the knots.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import torch

from d3ke_assets.errors import D3keError

SUPPORTED = ("Constant", "LinearFunction", "SimmSpline", "NaturalCubicSpline", "MultiplierFunction",
             "PolynomialFunction")


class OsimFunction(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """d f / d x at `x`, elementwise (inverse kinematics' Jacobian)."""
        raise NotImplementedError

    def is_constant_zero(self) -> bool:
        return False


class Constant(OsimFunction):
    def __init__(self, value: float):
        super().__init__()
        self.value = float(value)

    def forward(self, x):
        return torch.full_like(x, self.value)

    def derivative(self, x):
        return torch.zeros_like(x)

    def is_constant_zero(self):
        return self.value == 0.0


class LinearFunction(OsimFunction):
    """OpenSim's LinearFunction: coefficients are (slope, intercept)."""

    def __init__(self, slope: float, intercept: float):
        super().__init__()
        self.slope, self.intercept = float(slope), float(intercept)

    def forward(self, x):
        return x * self.slope + self.intercept

    def derivative(self, x):
        return torch.full_like(x, self.slope)


class PolynomialFunction(OsimFunction):
    """SimTK's polynomial: coefficients from the highest power down (as `numpy.polyval`)."""

    def __init__(self, coefficients: list[float]):
        super().__init__()
        self.coefficients = [float(c) for c in coefficients]

    def forward(self, x):
        out = torch.zeros_like(x)
        for c in self.coefficients:  # Horner
            out = out * x + c
        return out

    def derivative(self, x):
        out = torch.zeros_like(x)
        power = len(self.coefficients) - 1
        for k, c in enumerate(self.coefficients[:-1]):
            out = out * x + c * (power - k)
        return out

    def is_constant_zero(self):
        return all(c == 0.0 for c in self.coefficients)


class MultiplierFunction(OsimFunction):
    def __init__(self, inner: OsimFunction, scale: float):
        super().__init__()
        self.inner, self.scale = inner, float(scale)

    def forward(self, x):
        return self.inner(x) * self.scale

    def derivative(self, x):
        return self.inner.derivative(x) * self.scale

    def is_constant_zero(self):
        return self.scale == 0.0 or self.inner.is_constant_zero()


class CubicSpline(OsimFunction):
    """Piecewise cubic y_i + b_i dx + c_i dx^2 + d_i dx^3, linear beyond the ends (slope b)."""

    def __init__(self, x, y, b, c, d):
        super().__init__()
        for name, v in (("knots", x), ("y", y), ("b", b), ("c", c), ("d", d)):
            self.register_buffer(name, torch.as_tensor(np.asarray(v, float)))

    def _interval(self, x):
        """(knots, i, dx): interval i with knots[i] <= x < knots[i+1] (the last knot belongs to the last
        interval) and x's offset in it."""
        knots = self.knots.to(x.dtype)
        i = torch.clamp(torch.searchsorted(knots, x.detach().contiguous(), right=True) - 1, 0, knots.shape[0] - 2)
        return knots, i, x - knots[i]

    def forward(self, x):
        knots, i, dx = self._interval(x)
        y, b, c, d = (t.to(x.dtype) for t in (self.y, self.b, self.c, self.d))
        inside = y[i] + dx * (b[i] + dx * (c[i] + dx * d[i]))
        below = y[0] + (x - knots[0]) * b[0]
        above = y[-1] + (x - knots[-1]) * b[-1]
        return torch.where(x < knots[0], below, torch.where(x > knots[-1], above, inside))

    def derivative(self, x):
        knots, i, dx = self._interval(x)
        b, c, d = (t.to(x.dtype) for t in (self.b, self.c, self.d))
        inside = b[i] + dx * (2 * c[i] + 3 * dx * d[i])
        return torch.where(x < knots[0], b[0].expand_as(x), torch.where(x > knots[-1], b[-1].expand_as(x), inside))


def simm_spline_coefficients(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SIMM's cubic spline (Forsythe, Malcolm and Moler): end cubics fit the first and last 4 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    b, c, d = np.zeros(n), np.zeros(n), np.zeros(n)
    if n < 3:  # a line, as SimmSpline does with two points
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return np.full(n, slope), c, d
    nm1 = n - 1
    d[0] = x[1] - x[0]
    c[1] = (y[1] - y[0]) / d[0]
    for i in range(1, nm1):
        d[i] = x[i + 1] - x[i]
        b[i] = 2.0 * (d[i - 1] + d[i])
        c[i + 1] = (y[i + 1] - y[i]) / d[i]
        c[i] = c[i + 1] - c[i]
    b[0], b[nm1] = -d[0], -d[n - 2]
    c[0] = c[nm1] = 0.0
    if n > 3:
        c[0] = c[2] / (x[3] - x[1]) - c[1] / (x[2] - x[0])
        c[nm1] = c[n - 2] / (x[nm1] - x[n - 3]) - c[n - 3] / (x[n - 2] - x[n - 4])
        c[0] = c[0] * d[0] * d[0] / (x[3] - x[0])
        c[nm1] = -c[nm1] * d[n - 2] * d[n - 2] / (x[nm1] - x[n - 4])
    for i in range(1, n):
        t = d[i - 1] / b[i - 1]
        b[i] -= t * d[i - 1]
        c[i] -= t * c[i - 1]
    c[nm1] /= b[nm1]
    for i in range(n - 2, -1, -1):
        c[i] = (c[i] - d[i] * c[i + 1]) / b[i]
    b[nm1] = (y[nm1] - y[n - 2]) / d[n - 2] + d[n - 2] * (c[n - 2] + 2.0 * c[nm1])
    for i in range(nm1):
        b[i] = (y[i + 1] - y[i]) / d[i] - d[i] * (c[i + 1] + 2.0 * c[i])
        d[i] = (c[i + 1] - c[i]) / d[i]
        c[i] = 3.0 * c[i]
    c[nm1] = 3.0 * c[nm1]
    d[nm1] = d[n - 2]
    return b, c, d


def _floats(element: ET.Element | None) -> list[float]:
    return [float(v) for v in (element.text or "").split()] if element is not None else []


def parse_function(element: ET.Element, where: str) -> OsimFunction:
    """An OpenSim function XML element -> torch module; `where` names the file and owner for errors."""
    kind = element.tag
    if kind == "Constant":
        return Constant(_floats(element.find("value"))[0])
    if kind == "LinearFunction":
        slope, intercept = _floats(element.find("coefficients"))
        return LinearFunction(slope, intercept)
    if kind == "PolynomialFunction":
        return PolynomialFunction(_floats(element.find("coefficients")))
    if kind in ("SimmSpline", "NaturalCubicSpline"):
        x, y = np.array(_floats(element.find("x"))), np.array(_floats(element.find("y")))
        if len(x) < 2 or len(x) != len(y) or np.any(np.diff(x) <= 0):
            raise D3keError(f"{where}: {kind} needs two or more strictly increasing x values with as many y")
        # OpenSim's NaturalCubicSpline, despite its name, computes the same SIMM (FMM) coefficients.
        return CubicSpline(x, y, *simm_spline_coefficients(x, y))
    if kind == "MultiplierFunction":
        holder = element.find("function")
        inner = next(iter(holder), None) if holder is not None else None
        if inner is None:
            raise D3keError(f"{where}: MultiplierFunction has no inner function")
        scale = _floats(element.find("scale"))
        return MultiplierFunction(parse_function(inner, where), scale[0] if scale else 1.0)
    raise D3keError(f"{where}: function type {kind} is not supported by the skeletal layer "
                    f"(supported: {', '.join(SUPPORTED)})")
