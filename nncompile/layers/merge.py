"""Merge layers: Add, Multiply and Concat take two or more inputs and make one value of them.

Their backward hands each input its share of dy; the compiler decides, per input, whether that share is written
to the input's gradient or added to it (when the input's value has other consumers).
"""

from __future__ import annotations

import itertools

from ..registry import Arg, Bound, Buffer, Layer, ShapeError, register


def _shapes_text(in_shapes) -> str:
    return ", ".join(str(list(s)) for s in in_shapes)


class Merge(Layer):
    arity = (2, None)
    saves = frozenset()

    @classmethod
    def _bound(cls, args, in_shapes, out_shape, buffers=(), constants=None, saves=None) -> Bound:
        forward, backward = cls.formulas(args)
        return Bound(
            out_shape=tuple(out_shape),
            params=(),
            buffers=tuple(buffers),
            stacked={},
            constants=constants or {},
            saves=cls.saves if saves is None else saves,
            forward_formula=forward,
            backward_formulas=backward,
        )


class Elementwise2(Merge):
    shape_rule = "[s], [s], ... → [s]; every input has the same shape"

    @classmethod
    def bind(cls, args, in_shapes):
        shape = cls._same_shape(in_shapes)
        # A buffer per input for its share of the gradient (Add: a copy of dy where it cannot hand dy over).
        buffers = [Buffer(f"dx{i}", shape) for i in range(len(in_shapes))]
        return cls._bound(args, in_shapes, shape, buffers)

    @classmethod
    def _same_shape(cls, in_shapes) -> tuple[int, ...]:
        first = tuple(in_shapes[0])
        if any(tuple(s) != first for s in in_shapes[1:]):
            raise ShapeError(f"{cls.name} needs inputs of one shape, got {_shapes_text(in_shapes)}")
        return first


@register
class Add(Elementwise2):
    name = "Add"
    template = "layers/add.py.j2"
    summary = "Elementwise sum of two or more inputs of the same shape (a residual connection's join)."
    forward_formula = "y = x₁ + x₂ + … + xₙ"
    backward_formulas = ("dxᵢ = dy  (for every input i)",)


@register
class Multiply(Elementwise2):
    name = "Multiply"
    template = "layers/multiply.py.j2"
    summary = "Elementwise product of two or more inputs of the same shape (gating)."
    forward_formula = "y = x₁ ⊙ x₂ ⊙ … ⊙ xₙ"
    backward_formulas = ("dxᵢ = dy ⊙ Π_{j ≠ i} xⱼ",)
    saves = frozenset({"input"})


@register
class Concat(Merge):
    name = "Concat"
    args = (Arg("axis", "int", -1, doc="per-sample axis to join along; negative counts from the end (-1: the last)"),)
    template = "layers/concat.py.j2"
    summary = "Joins two or more inputs along one per-sample axis; the other axes must agree."
    shape_rule = "[…, a, …], […, b, …] → […, a + b, …] along `axis`"
    forward_formula = "y = [x₁, x₂, …, xₙ] joined along axis"
    backward_formulas = ("dxᵢ = the slice of dy that xᵢ filled",)

    @classmethod
    def bind(cls, args, in_shapes):
        rank = len(in_shapes[0])
        axis = args["axis"]
        if any(len(s) != rank for s in in_shapes):
            raise ShapeError(f"Concat needs inputs with the same number of axes, got {_shapes_text(in_shapes)}")
        if not -rank <= axis < rank:
            raise ShapeError(
                f"Concat(axis={axis}) is out of range for inputs with {rank} "
                f"ax{'i' if rank == 1 else 'e'}s (per sample: {-rank}..{rank - 1})"
            )
        axis %= rank
        for shape in in_shapes[1:]:
            if any(a != b for i, (a, b) in enumerate(zip(shape, in_shapes[0])) if i != axis):
                raise ShapeError(
                    f"Concat(axis={args['axis']}) needs inputs that agree on every other axis, got "
                    f"{_shapes_text(in_shapes)}"
                )
        out_shape = list(in_shapes[0])
        out_shape[axis] = sum(s[axis] for s in in_shapes)
        edges = [0]
        for shape in in_shapes:
            edges.append(edges[-1] + shape[axis])
        # dy[:, …, start:stop] for each input: its slice along the array axis (axis + 1, after the batch).
        lead = ":, " * (axis + 1)
        slices = [f"[{lead}{start}:{stop}]" for start, stop in itertools.pairwise(edges)]
        # Each input's slice of dy is copied into a buffer of its own: a strided view would make the next GEMM
        # copy it anyway (into a fresh array each step).
        buffers = [Buffer(f"dx{i}", tuple(shape)) for i, shape in enumerate(in_shapes)]
        constants = {"array_axis": axis + 1, "slices": slices}
        return cls._bound(args, in_shapes, out_shape, buffers, constants=constants)
