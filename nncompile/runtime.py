"""The runtime every generated module carries: what all compiled models share (checks, forward/backward wrappers,
training loop, state, files), written once as plain Python and pasted unchanged into each generated module.

The generated code defines DTYPE and, per model class, its layers, loss terms and optimizer; see `_CompiledModel`
for the contract. The lines above the marker below are only for using this file on its own (tests, linting).
"""

import collections.abc
import signal
import sys
import threading
import time

import numpy as np

DTYPE = np.float64

# ---- generated modules copy everything below this line ----


def _matmul_into(a, b, out, accumulate):
    """out = a @ b, or out += a @ b while gradients accumulate across backward() calls."""
    if accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)


def _aligned_full(shape, value, dtype):
    """np.full, but the data starts on a 64-byte boundary, so whole SIMD loads never straddle cache lines."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    array = raw[start : start + size].view(dtype).reshape(shape)
    array[...] = value
    return array


def _views(flat, layout):
    """name → a view of the flat array for each (name, shape, start, stop) of the layout."""
    return {name: flat[start:stop].reshape(shape) for name, shape, start, stop in layout}


def _is_integer(value):
    """An int or a NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value):
    """An int or a float, Python's or NumPy's, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_int(name, value, minimum):
    """value as an int when it is an integer >= minimum; otherwise a ValueError naming the argument."""
    if not _is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _file_path(path, where):
    """path (a str, bytes or os.PathLike) as a str; anything else a TypeError naming where."""
    import os

    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"{where}: path must be a file name (str, bytes or os.PathLike) or a binary file object, "
            f"got {type(path).__name__}"
        ) from None


def _check_flag(name, value, where):
    """value as a bool when it is True or False (a NumPy bool too); anything else a TypeError naming where: a string
    such as "no" would otherwise count as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def _check_seed(seed, where):
    """seed as None or an int >= 0, the seeds every method documents; anything else a ValueError naming where."""
    if seed is not None and (not _is_integer(seed) or seed < 0):
        raise ValueError(f"{where}: seed must be None or an integer >= 0, got {seed!r}")
    return None if seed is None else int(seed)


def _generator_state(generator):
    """A PCG64 generator's state as six unsigned 64-bit integers, so it saves in an .npz like any array."""
    state = generator.bit_generator.state
    mask = (1 << 64) - 1
    inner = state["state"]
    words = [inner["state"] >> 64, inner["state"] & mask, inner["inc"] >> 64, inner["inc"] & mask]
    return np.array([*words, state["has_uint32"], state["uinteger"]], dtype=np.uint64)


def _generator_state_dict(words):
    """The inverse of _generator_state: the bit generator state dict NumPy accepts."""
    words = [int(w) for w in np.asarray(words, dtype=np.uint64)]
    return {
        "bit_generator": "PCG64",
        "state": {"state": words[0] << 64 | words[1], "inc": words[2] << 64 | words[3]},
        "has_uint32": words[4],
        "uinteger": words[5],
    }


def _indices(array, what):
    """An integer input as an intp array: integers, or floats with whole values; anything else is refused."""
    array = np.asarray(array)
    if array.dtype.kind in "iu":
        return array.astype(np.intp, copy=False)
    if array.dtype.kind == "f" and np.isfinite(array).all() and np.all(np.mod(array, 1) == 0):
        return array.astype(np.intp)
    raise ValueError(f"{what} holds indices and must be integers, got {_dtype_text(array.dtype)}")


def _shape_text(shape):
    return "(batch, " + ", ".join(str(d) for d in shape) + ")"


# The rules optimizer hyperparameters follow, by the names nncompile/registry.py gives its value checks: the test a
# value must pass and what the compiler says when it does not.
_RULES = {
    None: (lambda value: True, ""),
    "positive": (lambda value: value > 0, "must be positive"),
    "non_negative": (lambda value: value >= 0, "must not be negative"),
    "in_unit_interval": (lambda value: 0 <= value < 1, "must be in [0, 1)"),
}


def _hyperparameter(owner, name, value, kind, rule):
    """value as the hyperparameter `name` holds it (a float, or an int for an "int" one), checked as the compiler
    checks it in a .nn file: a finite real number passing `rule`; otherwise a ValueError naming owner and name."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    # A wrong type is a ValueError here, as for any other value the compiler would refuse in a .nn file.
    if not _is_real(value):
        raise ValueError(f"{owner}: {name} must be a real number, got {value!r}")
    if kind == "int":
        if not _is_integer(value):
            raise ValueError(f"{owner}: {name} must be an integer, got {value!r}")
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            value = np.inf
        if not -np.inf < value < np.inf:
            raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    test, problem = _RULES[rule]
    if not test(value):
        raise ValueError(f"{owner}: {name} {problem}, got {value!r}")
    return value


def _hyperparameter_property(name, kind, rule):
    """The model attribute `name` for an optimizer hyperparameter: an assignment is checked (see _hyperparameter)
    and refused with a ValueError, the old value kept. The value lives in `_hp_<name>`; reading it (as step() does)
    goes through operator.attrgetter, which costs a C call, not a Python one."""
    import operator

    storage = "_hp_" + name

    def assign(model, value):
        setattr(model, storage, _hyperparameter(type(model).__name__, name, value, kind, rule))

    return property(operator.attrgetter(storage), assign, doc=f"optimizer hyperparameter {name}, checked when set")


# _CompiledModel._grads_problem of gradients that step() has to look over before it applies them.
_UNCHECKED = "unchecked"


class _WeightedTargets(tuple):
    """The checked targets of a loss(x, y, sample_weight=w) call, carrying the weights for backward()."""

    weight = None


def _softmax(z):
    """Softmax over the last axis (the classes), computed as exp(z - max) / Σ exp(z - max) so exp never overflows."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _sigmoid(z):
    """1 / (1 + e^(-z)), from e^(-|z|) ≤ 1 so nothing overflows: e / (1 + e) for z < 0."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


# predict_proba()'s probabilities by what a loss term names (nncompile/registry.py's Loss.probabilities).
_PROBABILITIES = {"softmax": _softmax, "sigmoid": _sigmoid, "identity": lambda z: z}


def _sum_is_finite(array):
    """Whether the sum of a float array is finite, which proves every value finite (a NaN or an infinity makes the sum
    NaN or infinite): one pass, no allocation. False too when finite values overflow the sum (without a warning);
    the caller then looks value by value."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(array, axis=None)))


def _non_finite_sample(named_arrays):
    """(name, sample index) of the first array with a NaN or infinite value, or None when all are finite."""
    for name, array in named_arrays:
        if array.dtype.kind in "iub":
            continue
        # Per sample as a matrix-vector product where the samples are rows of a contiguous array (BLAS reads it on
        # every core), then the sum of those sums.
        rows = array.reshape(len(array), -1) if array.ndim > 1 and array.size and array.flags.c_contiguous else None
        if rows is not None and rows.shape[1] > 1 and array.dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                sums = np.matmul(rows, np.ones(rows.shape[1], array.dtype))
            if _sum_is_finite(sums):
                continue
        elif array.dtype.kind == "f" and _sum_is_finite(array):
            continue
        finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
        if not finite.all():
            return name, int(np.argmin(finite))
    return None


def _named(label, names, arrays):
    """(what messages call it, array) per array: label, or label['name'] when there are several."""
    return [(label if len(arrays) == 1 else f"{label}['{name}']", a) for name, a in zip(names, arrays)]


def _dtype_text(dtype):
    kinds = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "strings", "S": "bytes"}
    return f"{kinds.get(dtype.kind, 'values')} (dtype {dtype})"


def _check_finite(array, where, what="", shape=None):
    """check_numerics: a FloatingPointError at the first NaN or infinite value of array (in C order), naming where it
    was made; nothing when every value is finite. A finite sum proves that (a NaN or an infinity makes the sum NaN or
    infinite), so a clean array costs one pass and no allocation; only a non-finite sum looks value by value.
    With shape, array is a view of values of that shape with its axes split and reordered (an array kept in a
    pool's order) whose C order is theirs: the index is reported in shape."""
    if _sum_is_finite(array):
        return
    bad = ~np.isfinite(array)
    if bad.any():  # else the sum of finite values overflowed
        first = int(np.argmax(bad))
        value = float(array[np.unravel_index(first, array.shape)])
        at = ", ".join(str(int(i)) for i in np.unravel_index(first, array.shape if shape is None else shape))
        raise FloatingPointError(f"{where} {value} at [{at}]{what}")


# gradcheck(): the finite-difference step (relative to max(1, |value|)) and the tolerance, by DTYPE: an entry agrees
# when |analytic - numeric| <= atol * max(1, |loss|) + rtol * max(|analytic|, |numeric|) (the loss's rounding error
# grows with the loss). float32 keeps about 7 digits, so its step must be large and its tolerance loose (an error of
# a few percent of a gradient can pass): a float64 build is the one to trust.
_GRADCHECK = {
    "float64": {"eps": 1e-6, "atol": 1e-7, "rtol": 1e-5},
    "float32": {"eps": 3e-4, "atol": 1e-3, "rtol": 2e-2},
}


class _GradcheckTensor:
    """gradcheck()'s finding for one tensor: kind ("parameter" or "input"), entries checked, the largest absolute and
    relative difference between backward() and finite differences, the worst entry's index, and whether all agree."""

    __slots__ = ("checked", "kind", "max_abs_error", "max_rel_error", "ok", "worst")

    def __init__(self, kind, checked, max_abs_error, max_rel_error, worst, ok):
        self.kind, self.checked, self.worst, self.ok = kind, checked, worst, ok
        self.max_abs_error, self.max_rel_error = max_abs_error, max_rel_error

    def __repr__(self):
        return (
            f"_GradcheckTensor(kind={self.kind!r}, checked={self.checked}, max_abs_error={self.max_abs_error:.3g}, "
            f"max_rel_error={self.max_rel_error:.3g}, worst={self.worst}, ok={self.ok})"
        )


class _GradcheckReport:
    """What model.gradcheck() found. report.ok: every entry checked agrees within the tolerance; report.tensors:
    name → _GradcheckTensor, the parameters (by their names in model.params) then the inputs (by input name);
    report.failures: the names of the tensors that disagree; str(report): a table."""

    def __init__(self, tensors, dtype, eps, atol, rtol, loss):
        self.tensors, self.dtype, self.eps, self.atol, self.rtol, self.loss = tensors, dtype, eps, atol, rtol, loss

    @property
    def ok(self):
        return all(t.ok for t in self.tensors.values())

    @property
    def failures(self):
        return [name for name, t in self.tensors.items() if not t.ok]

    def __repr__(self):
        return f"<GradcheckReport {'ok' if self.ok else 'FAILED: ' + ', '.join(self.failures)}>"

    def __str__(self):
        verdict = "ok" if self.ok else f"FAILED for {', '.join(self.failures)}"
        width = max(len("tensor"), *(len(name) for name in self.tensors))
        lines = [
            f"gradcheck ({self.dtype}, eps {self.eps:g}, loss {self.loss:.6g}): {verdict}",
            f"  an entry agrees when |analytic - numeric| <= {self.atol:.3g} + {self.rtol:g} * max(|analytic|, |numeric|)",
            f"  {'tensor':<{width}}  {'checked':>7}  {'max abs error':>13}  {'max rel error':>13}  worst entry",
        ]
        for name, t in self.tensors.items():
            mark = "" if t.ok else "  <- disagrees"
            lines.append(
                f"  {name:<{width}}  {t.checked:>7}  {t.max_abs_error:>13.3g}  {t.max_rel_error:>13.3g}  "
                f"{list(t.worst)}{mark}"
            )
        return "\n".join(lines)


class _Progress:
    """fit()'s progress on stdout: one line per epoch; on a terminal the line is redrawn in place (with \\r) as
    batches complete. Prints nothing when not verbose."""

    def __init__(self, verbose, epochs, batches):
        self.verbose = verbose
        self.live = verbose and sys.stdout.isatty()
        self.epochs = epochs
        self.batches = batches
        self.width = 0  # length of the line being redrawn, so a shorter one can blank it out
        self.drawn_at = 0.0

    def due(self, batch):
        """Whether to redraw after this batch: on a terminal, at most ten times a second."""
        return self.live and (batch == 1 or time.perf_counter() - self.drawn_at >= 0.1)

    def show(self, epoch, batch, metrics, started):
        """Redraw the current epoch's line: a bar of completed batches and the running metrics."""
        done = 30 * batch // self.batches
        bar = "[" + "=" * done + "." * (30 - done) + "]"
        self._draw(self._line(epoch, f"{bar} {batch}/{self.batches}", metrics, started), "")
        self.drawn_at = time.perf_counter()

    def end_epoch(self, epoch, metrics, started):
        if self.verbose:
            self._draw(self._line(epoch, f"{self.batches}/{self.batches}", metrics, started), "\n")

    def note(self, text):
        if self.verbose:
            self.close()
            print(text, flush=True)

    def close(self):
        """End a line left half-drawn (by an interrupt or an error)."""
        if self.width:
            print(flush=True)
            self.width = 0

    def _line(self, epoch, position, metrics, started):
        values = "  ".join(f"{name} {value:{'.4g' if name == 'lr' else '.4f'}}" for name, value in metrics.items())
        width = len(str(self.epochs))
        seconds = time.perf_counter() - started
        elapsed = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
        return f"epoch {epoch + 1:{width}d}/{self.epochs}  {position}  {values}  {elapsed}"

    def _draw(self, line, end):
        if self.live:
            print("\r" + line.ljust(self.width), end=end, flush=True)
            self.width = 0 if end else len(line)
        else:
            print(line, end=end, flush=True)


class _CompiledModel:
    """What every compiled model shares. A model class of the generated module adds:

    input_shapes, output_shapes  dicts name → per-sample shape, in declaration order
    has_loss, _loss_terms        whether it has a loss; (output, scale, metric or None, probabilities or None) per
                                 loss term (probabilities: what predict_proba() applies, a key of _PROBABILITIES)
    _hyperparameters             (name, type, rule) per optimizer hyperparameter: model attributes, checked when set
    _schedule                    the schedule statement's call, or None; a scheduled model also has
                                 _scheduled_lr(epoch, lr), the lr after `epoch` steps of the schedule given the lr in
                                 force, and __init__ sets base_lr, schedule_epoch = 0 and the lr of epoch 0
    _param_layout, _buffers      parameter and workspace layouts; _batch_last_buffers (optional): workspace arrays
                                 whose batch is the last axis
    __init__(seed)               parameters and hyperparameters, then self._init_runtime()
    _update()                    the optimizer update, which step() applies
    _folds_lr                    True for an optimizer whose update is p = p - lr · g while its other
                                 hyperparameters are 0 (plain SGD): see _backward_to_step()
    _forward(*inputs)            a tuple of the outputs; keeps what backward reads in self._saved
    _backward(douts, need_dx)    douts: one gradient per output; returns the input gradients (or None)
    _check_target_<output>(y, batch), _loss_value_<output>(z, target), _weighted_loss_value_<output>(z, target,
    weight) (mean(wᵢ·lᵢ), weight shaped (batch, 1, ...) to broadcast against z, leaving the workspace as the unweighted
    one does for the gradient), _loss_gradient_<output>(target) and, for a term with a metric,
    _correct_<output>(z, target) → (correct, compared), called after the term's loss value on the same batch (whose
    workspace it may read): one set per loss term.
    _forward_checked, _backward_checked   the same with a check after every layer (check_numerics)
    """

    _schedule = None
    _folds_lr = False
    _batch_last_buffers = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, kind, rule in cls.__dict__.get("_hyperparameters", ()):
            setattr(cls, name, _hyperparameter_property(name, kind, rule))

    def _init_runtime(self):
        # Training mode (as PyTorch's module.training): Dropout drops and BatchNorm uses batch statistics only
        # while it is True. fit() and train_step() always train, predict() and evaluate() always infer.
        self.training = True
        self.step_count = 0
        self._workspaces = {}
        self._saved = None
        self._ws = None
        self._targets = None
        # The loss the targets in self._targets gave: backward() tells step() when it was not finite.
        self._last_loss = None
        # False right after zero_grad(): backward then writes gradients instead of adding to them.
        self._accumulate = False
        # What step() must know of the gradients: None when it may apply them, _UNCHECKED when they come from the
        # public backward() and must be looked over first, or why it must not apply them.
        self._grads_problem = None
        # Not None after a step with lr folded into backward: the gradient arrays then hold lr · g, and the public
        # grads divides this back out the first time it is read (see _backward_to_step).
        self._grads_scale = None
        self.grads = _Gradients(self)
        self._input_names = tuple(self.input_shapes)
        self._output_names = tuple(self.output_shapes)
        self._terms = []
        # Set below for a model with one input, one output and one loss term of scale 1 (train_step's fast path).
        self._plain_term = None
        # Set True (by a fit() callback) to stop fit() after the current epoch; fit() sets it False when it starts.
        self.stop_training = False
        # check_numerics: False runs _forward and _backward, True their checked twins (see the check_numerics setter).
        self._checking = False
        for output, scale, metric, probabilities in self._loss_terms:
            suffix = output.replace(".", "_")
            self._terms.append(
                (
                    output,
                    self._output_names.index(output),
                    scale,
                    metric,
                    getattr(self, "_check_target_" + suffix),
                    getattr(self, "_loss_value_" + suffix),
                    getattr(self, "_loss_gradient_" + suffix),
                    getattr(self, "_correct_" + suffix) if metric else None,
                    getattr(self, "_weighted_loss_value_" + suffix),
                    probabilities,
                )
            )
        if len(self._input_names) == len(self._output_names) == len(self._terms) == 1 and self._terms[0][2] == 1:
            self._plain_term = self._terms[0][4:7]

    # ---- the public API ---------------------------------------------------------------------------------

    def forward(self, x):
        """The model's output for a batch x (a dict {output name: array} when it has several outputs); keeps
        what backward() needs."""
        self._targets = self._last_loss = None
        outputs = self._forward(*self._check_inputs(x))
        return self._as_outputs(tuple(z.copy() for z in outputs))

    def loss(self, x, y, sample_weight=None):
        """The loss on a batch (a Python float; with several loss terms their scaled sum); runs forward and keeps
        y for backward(). With sample_weight (one weight ≥ 0 per sample), each term is mean(wᵢ·lᵢ), lᵢ the loss of
        sample i, as in Keras; backward() then follows the weighted loss.

        Targets with a NaN or infinite value are refused (ValueError). A non-finite loss from other causes is
        returned as it is; backward() then computes its gradients, but step() refuses to apply them."""
        _, targets, loss = self._forward_loss(x, y, sample_weight)
        if not -np.inf < loss < np.inf:
            # Only now look for the cause, so a finite loss costs no scan of the targets.
            self._refuse_non_finite_targets(targets)
        return loss

    def _forward_loss(self, x, y, sample_weight=None):
        """Checked inputs and targets, and the loss of a forward pass on them (kept for backward())."""
        self._require_loss()
        inputs = self._check_inputs(x)
        targets = self._check_targets(y, len(inputs[0]))
        weight = self._check_weight(sample_weight, len(inputs[0]), "sample_weight")
        outputs = self._forward(*inputs)
        if weight is not None:
            targets = _WeightedTargets(targets)
            targets.weight = weight
        self._targets = targets
        loss = self._last_loss = self._total(self._loss_values(outputs, targets, weight))
        return inputs, targets, loss

    def backward(self, dout=None):
        """Gradient of the loss w.r.t. the input (a dict {input name: array} when there are several); adds
        parameter gradients into self.grads.

        With no dout, starts from the loss of the last loss() call; otherwise dout is dL/d(output) (a dict
        {output name: array} when there are several outputs). Gradients from a non-finite loss are computed too,
        but step() refuses to apply them.
        """
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}: backward() needs a forward() or loss() call first")
        if dout is None:
            self._require_loss("; pass dout, the gradient w.r.t. the output")
            if self._targets is None:
                raise RuntimeError(
                    f"{type(self).__name__}: backward() without dout needs a loss(x, y) call after the last forward()"
                )
            targets = self._targets
            douts = self._loss_gradients(targets, targets.weight if type(targets) is _WeightedTargets else None)
        else:
            douts = self._check_douts(dout)
        accumulated = self._accumulate
        if accumulated:
            self._settle_grads()
        else:
            self._grads_scale = None
        grads = self._backward(douts, True)
        loss = self._last_loss
        if dout is None and loss is not None and not -np.inf < loss < np.inf:
            self._grads_problem = f"the gradients come from a loss of {loss}"
        elif not accumulated or self._grads_problem is None:
            # Not added to gradients refused before: to be looked over by step().
            self._grads_problem = _UNCHECKED
        return self._as_inputs(tuple(None if g is None else g.copy() for g in grads))

    def zero_grad(self):
        self._flat_grads.fill(0)
        self._grads_scale = None
        self._accumulate = False
        self._grads_problem = None

    def step(self):
        """Apply the optimizer's update to every parameter, in place, from the gradients in self.grads.

        Refuses (FloatingPointError, parameters and optimizer state unchanged) gradients computed from a loss that
        was not finite, or holding a NaN or infinite value; zero_grad() and fresh gradients are then needed.
        """
        self._settle_grads()
        problem = self._grads_problem
        if problem is not None:
            if problem is _UNCHECKED:
                # Gradients from the public backward() are looked over once; train_step() and fit() check the loss.
                problem = None
                if not np.isfinite(self._flat_grads).all():
                    bad = next((n for n, g in self.grads.items() if not np.isfinite(g).all()), "a parameter")
                    problem = f"the gradient of {bad!r} has a NaN or infinite value"
                self._grads_problem = problem
            if problem is not None:
                raise FloatingPointError(
                    f"{type(self).__name__}.step: {problem}; no update applied, the parameters and optimizer state "
                    "are unchanged. Call zero_grad() and compute the gradients again."
                )
        self._update()

    @property
    def check_numerics(self):
        """When True, every forward and backward pass (train_step, fit, predict, ...) checks the inputs, each layer's
        output and each gradient as soon as it is made: the first NaN or infinite value raises FloatingPointError
        naming the layer, its .nn file and line, forward or backward, and the value's index, e.g.
        `fc2 = Linear(10) (model.nn:6): forward produced inf at [3, 7]`.

        Off by default, and then free: setting it swaps in _forward_checked and _backward_checked (the same code with
        a check after every layer) for this model; clearing it puts the plain methods back."""
        return self._checking

    @check_numerics.setter
    def check_numerics(self, on):
        self._checking = _check_flag("check_numerics", on, type(self).__name__)
        if self._checking:
            self._forward, self._backward = self._forward_checked, self._backward_checked
        else:
            self.__dict__.pop("_forward", None)
            self.__dict__.pop("_backward", None)

    def gradcheck(self, x, y, eps=None, samples=20, seed=0):
        """Check backward() against central finite differences of the loss on the batch (x, y); returns a
        GradcheckReport (report.ok, per-tensor errors, a table when printed).

        For every parameter and every float input, `samples` entries (all when fewer; chosen by
        np.random.default_rng(seed)) are nudged by ±eps·max(1, |value|) and (L(+) - L(-)) / (2·step) is compared with
        the gradient backward() gives. The model runs in its current mode (train() or eval()), and Dropout draws the
        same masks for every evaluation. eps and the tolerance default by dtype (see _GRADCHECK): a float64 build
        (nncompile --dtype float64) is the one to trust; float32 catches only gross errors.

        Changes no parameters, gradients, buffers, optimizer state or random state (all are put back). Its forward
        passes replace the one backward() would use: call loss() again before backward().
        """
        self._require_loss()
        inputs = tuple(a.copy() for a in self._check_inputs(x))
        targets = self._check_targets(y, len(inputs[0]))
        samples = _check_int("samples", samples, 1)
        seed = _check_seed(seed, f"{type(self).__name__}.gradcheck")
        dtype = np.dtype(DTYPE).name
        settings = _GRADCHECK[dtype]
        if eps is None:
            eps = settings["eps"]
        elif not _is_real(eps) or not 0 < eps < np.inf:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        eps = float(eps)
        rtol = settings["rtol"]
        nontrainable = getattr(self, "_flat_nontrainable", None)
        self._settle_grads()
        kept = (
            self._flat_params.copy(),
            self._flat_grads.copy(),
            None if nontrainable is None else nontrainable.copy(),
            self._rng.bit_generator.state if self._random else None,
            self._accumulate,
            self._grads_problem,
        )
        masks = kept[3]

        def loss_here():
            if masks is not None:
                self._rng.bit_generator.state = masks  # the same Dropout masks every time
            return self._total(self._loss_values(self._forward(*inputs), targets))

        try:
            loss = loss_here()
            if not -np.inf < loss < np.inf:
                raise FloatingPointError(f"{type(self).__name__}.gradcheck: the loss is {loss}; nothing to compare")
            atol = settings["atol"] * max(1.0, abs(loss))
            self._accumulate = False
            input_grads = self._backward(self._loss_gradients(targets), True)
            analytic = [(name, "parameter", param, self.grads[name].copy()) for name, param in self.params.items()]
            for name, array, grad in zip(self._input_names, inputs, input_grads):
                if grad is not None:
                    analytic.append((name, "input", array, grad.copy()))
            rng = np.random.default_rng(seed)
            tensors = {}
            for name, kind, array, grad in analytic:
                flat, grad = array.reshape(-1), grad.reshape(-1)
                chosen = np.sort(rng.choice(flat.size, min(samples, flat.size), replace=False))
                # Per entry: the central, forward and backward difference quotients.
                numeric = np.empty((len(chosen), 3))
                for n, i in enumerate(chosen):
                    old = flat[i]
                    step = eps * max(1.0, abs(float(old)))
                    flat[i] = old + step
                    up, plus = float(flat[i]) - float(old), loss_here()
                    flat[i] = old - step
                    down, minus = float(old) - float(flat[i]), loss_here()
                    flat[i] = old
                    numeric[n] = (plus - minus) / (up + down), (plus - loss) / up, (loss - minus) / down
                given = grad[chosen].astype(np.float64)
                # Where the step crosses a kink (ReLU at 0, a max changing hands), the central difference mixes two
                # slopes, but the one-sided difference on the kink-free side still matches: the closest one counts.
                closest = np.argmin(np.abs(numeric - given[:, None]), axis=1)
                numeric = numeric[np.arange(len(chosen)), closest]
                error = np.abs(given - numeric)
                scale = np.maximum(np.abs(given), np.abs(numeric))
                relative = np.divide(error, scale, out=np.zeros_like(error), where=scale > 0)
                excess = error / (atol + rtol * scale)
                worst = np.unravel_index(int(chosen[np.argmax(excess)]), array.shape)
                tensors[name] = _GradcheckTensor(
                    kind,
                    len(chosen),
                    float(error.max()),
                    float(relative.max()),
                    tuple(int(i) for i in worst),
                    bool(np.all(excess <= 1)),
                )
        finally:
            np.copyto(self._flat_params, kept[0])
            np.copyto(self._flat_grads, kept[1])
            if nontrainable is not None:
                np.copyto(nontrainable, kept[2])
            if masks is not None:
                self._rng.bit_generator.state = masks
            self._accumulate, self._grads_problem = kept[4], kept[5]
            self._saved = self._targets = self._last_loss = None
        return _GradcheckReport(tensors, dtype, eps, atol, rtol, loss)

    def train(self, mode=True):
        """Set training mode (or inference mode with mode=False); returns the model."""
        self.training = _check_flag("mode", mode, f"{type(self).__name__}.train")
        return self

    def eval(self):
        """Set inference mode: Dropout is the identity, BatchNorm uses its running statistics; returns the model."""
        return self.train(False)

    def train_step(self, x, y, sample_weight=None):
        """zero_grad, loss, backward and step on one batch, in training mode whatever the current mode (which is
        restored); returns the loss before the update. sample_weight weights the samples as in loss().

        A loss that is not finite applies no update: targets with a NaN or infinite value raise ValueError, any
        other cause FloatingPointError naming it; the parameters and optimizer state are then unchanged.
        With plain SGD (momentum and weight decay 0, no clipping) lr is folded into backward, so the update is one
        subtraction; grads holds the same gradients afterwards, to rounding."""
        if self._uses_mode and not self.training:
            self.training = True
            try:
                return self.train_step(x, y, sample_weight)
            finally:
                self.training = False
        if sample_weight is not None:
            return self._weighted_train_step(x, y, sample_weight)
        # _forward_loss() written out: this is the hot path of training, where each call costs.
        self._require_loss()
        inputs = self._check_inputs(x)
        plain = self._plain_term
        if plain is not None and not isinstance(y, dict):
            # One input, one output, one unscaled loss term: the term's own methods, without the general wrappers.
            check, value, gradient = plain
            target = self._checked_target(check, y, len(inputs[0]))
            targets = self._targets = (target,)
            loss = self._last_loss = value(self._forward(*inputs)[0], target)
            if -np.inf < loss < np.inf:
                self._backward_to_step((gradient(target),))
                self._apply_step()
                return loss
        else:
            targets = self._check_targets(y, len(inputs[0]))
            outputs = self._forward(*inputs)
            self._targets = targets
            loss = self._last_loss = self._total(self._loss_values(outputs, targets))
        if not -np.inf < loss < np.inf:
            # The gradients are left as they were; step() refuses them until they are computed again.
            self._grads_problem = f"the last train_step() had a loss of {loss}"
            raise self._non_finite_step(loss, inputs, targets)
        # From a finite loss: applied without scanning the gradients (a scan would cost a pass over every one).
        self._backward_to_step(self._loss_gradients(targets))
        self._apply_step()
        return loss

    def _weighted_train_step(self, x, y, sample_weight):
        """train_step() with sample weights (kept apart so the unweighted step pays nothing for them)."""
        inputs, targets, loss = self._forward_loss(x, y, sample_weight)
        if not -np.inf < loss < np.inf:
            self._grads_problem = f"the last train_step() had a loss of {loss}"
            raise self._non_finite_step(loss, inputs, targets)
        self._backward_to_step(self._loss_gradients(targets, targets.weight))
        self._apply_step()
        return loss

    def schedule_step(self):
        """Advance the learning-rate schedule by one epoch, as PyTorch's scheduler.step(): fit() calls it after every
        epoch; call it yourself after each epoch of a loop of your own. Sets lr (the rule may use the lr in force, so
        a change you made to lr carries on, as in PyTorch) and counts the step in schedule_epoch."""
        if self._schedule is None:
            raise RuntimeError(
                f"model {type(self).__name__} has no schedule; add e.g. 'schedule StepLR(step_size=10)' after its "
                "optimizer in the .nn file and recompile"
            )
        epoch = self.schedule_epoch + 1
        self.lr = self._scheduled_lr(epoch, self.lr)
        self.schedule_epoch = epoch

    def state_dict(self):
        """Copies of the parameters and the optimizer state, as a flat dict of arrays."""
        state = {f"params/{name}": value.copy() for name, value in self.params.items()}
        for name, slots in self._slots.items():
            for slot, value in slots.items():
                state[f"optimizer/{name}/{slot}"] = value.copy()
        state["optimizer/step_count"] = np.array(self.step_count)
        if self._schedule is not None:
            state["optimizer/schedule_epoch"] = np.array(self.schedule_epoch)
        for name, _, _ in self._hyperparameters:
            state[f"optimizer/{name}"] = np.array(getattr(self, name))
        for name, value in self.buffers.items():
            state[f"buffers/{name}"] = value.copy()
        if self._random:
            state["buffers/rng"] = _generator_state(self._rng)
        return state

    def load_state_dict(self, state):
        """Restore parameters and optimizer state from state_dict() output.

        Everything is checked before anything changes: the keys (KeyError for a missing or unexpected one), each
        entry's shape and dtype (real numbers: floats, or integers; booleans, complex numbers, strings and objects
        are refused), the step count (an integer >= 0) and the hyperparameters (as assigning them checks them).
        On any problem the model is left exactly as it was.
        """
        self._apply_state(self._checked_state(state, f"{type(self).__name__}.load_state_dict"))

    def save(self, path):
        """Write parameters and optimizer state (state_dict()) to an .npz file at path, used exactly as given: no
        suffix is added, so save(p) and load(p) name the same file (the convention is a name ending in .npz).

        The file is written whole or not at all: the data goes to a temporary file in the same folder, which then
        replaces path in one step, so a failed save (disk full, file size limit, Ctrl-C) leaves any earlier file
        at path intact, and no temporary file behind. A new file gets the permissions the umask allows, a
        replaced one keeps its own. A symbolic link is followed: its target is replaced. path may also be a
        writable binary file object, written directly. No pickle is used.
        """
        import os
        import stat

        state = self.state_dict()
        if hasattr(path, "write"):
            np.savez(path, **state)
            return
        path = _file_path(path, f"{type(self).__name__}.save")
        where = f"{type(self).__name__}.save({path!r})"
        target = os.path.realpath(path)
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            raise ValueError(f"{where}: it exists and is not a regular file")
        folder, name = os.path.split(target)
        for _ in range(100):
            temporary = os.path.join(folder, f".{name[:100]}.{os.urandom(4).hex()}.tmp")
            try:
                # O_EXCL: never reuse a file that exists; mode 0o666 is narrowed by the umask, as for any new file.
                handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"{where}: no free temporary file name in {folder!r}")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **state)
                file.flush()
                os.fsync(file.fileno())
            if mode is not None:
                os.chmod(temporary, stat.S_IMODE(mode))
            os.replace(temporary, target)
        except BaseException as err:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            if isinstance(err, OSError) and err.errno is not None:
                message = f"{where}: {err.strerror}; nothing written, any earlier file there is unchanged"
                raise type(err)(err.errno, message) from None
            raise

    def load(self, path):
        """Read a file written by save() (path used exactly as given); training then continues exactly where it
        stopped.

        The file is checked before its data is read: it must be an .npz archive holding exactly the entries of
        state_dict() and nothing else, each with its shape and a real-number dtype (as its .npy header declares
        them) and no bytes beyond that; then the values are checked as load_state_dict() checks them. On any
        problem (KeyError for missing or unexpected entries, ValueError otherwise) the model is left as it was.
        """
        import zipfile

        if not hasattr(path, "read"):
            path = _file_path(path, f"{type(self).__name__}.load")
        where = f"{type(self).__name__}.load({path!r})"
        layout = self._state_layout()
        try:
            archive = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: no such file") from None
        except zipfile.BadZipFile:
            raise ValueError(f"{where}: not an .npz file written by save()") from None
        with archive:
            members = {}
            for info in archive.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else None
                if key not in layout:
                    raise KeyError(f"{where}: the file has an unexpected entry {info.filename!r}")
                if key in members:
                    raise ValueError(f"{where}: the file holds entry {key!r} twice")
                members[key] = info
            missing = [key for key in layout if key not in members]
            if missing:
                raise KeyError(f"{where}: the file is missing {missing[0]!r} ({len(missing)} missing in all)")
            # Every header first: shapes, dtypes and sizes are known before a byte of data is inflated.
            for key, info in members.items():
                try:
                    with archive.open(info) as stream:
                        version = np.lib.format.read_magic(stream)
                        if version == (1, 0):
                            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                        elif version == (2, 0):
                            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                        else:
                            raise ValueError(f"unsupported .npy format version {version}")
                        header_size = stream.tell()
                except (ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile) as err:
                    raise ValueError(f"{where}: entry {key!r} is not a readable array: {err}") from None
                self._check_entry(key, shape, dtype, layout[key], where)
                if info.file_size != header_size + dtype.itemsize * int(np.prod(shape)):
                    raise ValueError(f"{where}: entry {key!r} holds {info.file_size} bytes, not an array of {shape}")
            state = {}
            for key, info in members.items():
                try:
                    with archive.open(info) as stream:
                        state[key] = np.lib.format.read_array(stream, allow_pickle=False)
                except (ValueError, EOFError, zipfile.BadZipFile) as err:
                    raise ValueError(f"{where}: entry {key!r} cannot be read: {err}") from None
        self._apply_state(self._checked_state(state, where))

    def __getstate__(self):
        # copy.deepcopy and pickle go through state_dict(): copying the arrays one by one would turn the views
        # in params/grads into separate arrays that step() no longer updates.
        return self.state_dict()

    def __setstate__(self, state):
        self.__init__()
        self.load_state_dict(state)

    def __copy__(self):
        clone = type(self).__new__(type(self))
        clone.__setstate__(self.__getstate__())
        return clone

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __reduce_ex__(self, protocol):
        # pickle stores the class by module and name, to be imported again when loading; fail here, clearly, for a
        # class that cannot be found that way (copy.copy and copy.deepcopy do not come here: see above).
        cls = type(self)
        if getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is not cls:
            raise TypeError(
                f"cannot pickle {cls.__name__}: pickle finds a class again by importing its module, and module "
                f"{cls.__module__!r} cannot be imported (a module made by nncompile.load() lives only in memory). "
                "Save the state instead (save(path), then load(path) into a new model), or compile the .nn file to "
                "a .py module (nncompile model.nn -o model.py) and import the model from there."
            )
        return super().__reduce_ex__(protocol)

    def fit(
        self,
        x,
        y,
        epochs=1,
        batch_size=32,
        shuffle=True,
        seed=None,
        validation_data=None,
        validation_split=0.0,
        patience=None,
        restore_best=True,
        verbose=True,
        initial_epoch=0,
        sample_weight=None,
        callbacks=None,
        check_numerics=None,
        comm=None,
    ):
        """Train on (x, y) with mini-batch steps of the optimizer; returns the history, a dict of per-epoch lists.

        History: per-epoch lists of "loss" and the metrics (means over the epoch's batches, each taken before its
        step) and, when validating, of the same with "val_" in front (after the epoch). With several loss terms,
        "loss" is their scaled sum and each term adds "<output>_loss" (and "<output>_accuracy" where it has one).
        A model with a schedule adds "lr", the lr in force during each epoch; the schedule steps after every epoch
        (schedule_step()), counting its own steps: they are saved with the state, so load() then
        fit(initial_epoch=e) resumes the schedule exactly too.
        sample_weight: one weight ≥ 0 per sample of x; each batch's loss is then mean(wᵢ·lᵢ) (as Keras), so a
        weight of 0 removes a sample from training, and the history's losses are weighted likewise (accuracy is
        not). validation_data may then be (x_val, y_val, w_val); validation_split splits the weights too.
        callbacks: functions called as fn(epoch, logs) after every epoch (counted from 0), logs being that epoch's
        entries of the history (a new dict); one that sets model.stop_training = True stops training after that
        epoch, as in Keras.
        Each epoch runs train_step() on batches of batch_size samples, the last batch partial, in shuffled order
        when shuffle. With a seed, epoch e (counted from 0) is shuffled by np.random.default_rng([seed, e]), so a
        run is reproducible; to resume one, load() its saved state and call fit again with the same seed and
        initial_epoch=e (epochs still counts all of them, as in Keras): it continues exactly as without the break.
        validation_data=(x_val, y_val) is evaluated after every epoch; or validation_split=f holds out the last
        fraction f of x and y (taken before shuffling, as Keras does).
        patience: stop when val_loss has not improved for that many epochs; then, with restore_best, the
        parameters of the epoch with the lowest val_loss are put back (the optimizer state is kept).
        verbose: a progress line per epoch on stdout, redrawn in place while the epoch runs on a terminal.
        check_numerics: True or False sets model.check_numerics for this call (None, the default, keeps it): when on,
        the first NaN or infinite value a layer produces, forward or backward, raises FloatingPointError naming the
        layer and its line; the model is left as it was then, for inspection, and error.history holds the history.

        A non-finite loss, or gradients with a NaN or infinite value, stops training with FloatingPointError naming
        the epoch and batch, and the parameters and optimizer state are exactly those after the last step made from
        finite gradients (as fit() found them if there was none): fit() never keeps a step made from a NaN or
        infinite gradient. Rather than look over every step's gradients, fit() checks the model's state (parameters,
        optimizer state, statistics) every 64 steps, at the end of every epoch and at a non-finite loss, keeping a
        copy of the last state found finite; a check that finds a NaN or an infinity puts that copy back and takes
        the batches since again, each one's gradients checked (with one dot product, so a gradient whose sum of
        squares overflows counts as infinite; with plain SGD, lr · g), and stops before the first bad one.
        Ctrl-C (KeyboardInterrupt) stops training too; fit then keeps the state after the last completed step (or,
        should a check now find a NaN or an infinity in it, the last state found finite) and returns the history so
        far. A Ctrl-C that arrives while a step is applied is held until that step is complete (fit() handles SIGINT
        while it runs, in the main thread, and puts the handler back), so a step is never left half-applied.
        Afterwards there is no forward pass for backward() to use: call loss() first.

        comm: an MPI communicator (mpi4py's MPI.COMM_WORLD, or any object with Get_rank, Get_size, Bcast and
        Allreduce; this module never imports mpi4py) trains data-parallel, with the same script on every rank and
        the same x, y (and validation data) passed on each. batch_size is the global batch: each rank runs a
        contiguous share of every shuffled batch (shares differ by at most one sample), its gradient weighted by its
        share, and one in-place Allreduce of the flat gradient array gives every rank the global batch's gradient
        before every rank applies the same step, so the parameters follow single-process fit() (to rounding). When
        fit() starts, the parameters, optimizer state and buffers of rank 0 are broadcast. Losses, metrics and
        validation (sharded across ranks) are global, so the history, early stopping and best-epoch restore agree on
        every rank; only rank 0 prints progress. BatchNorm normalizes with each rank's local batch (as PyTorch DDP
        without SyncBatchNorm) and its running statistics are averaged across ranks after every epoch. Dropout: rank
        0 draws from the model's generator as without comm, rank r from a stream spawned from it for rank r, so
        masks differ per rank (and the generators differ after fit(); save from rank 0). An error on any rank
        (checks, a non-finite loss, a callback) raises the same exception type and message on every rank, with
        `rank` naming the rank it came from, instead of leaving the others waiting.
        """
        self._require_loss()
        ranks = None if comm is None else _Ranks(comm)
        arguments = (
            x,
            y,
            sample_weight,
            callbacks,
            batch_size,
            epochs,
            initial_epoch,
            patience,
            validation_data,
            validation_split,
            seed,
            shuffle,
            restore_best,
            check_numerics,
        )
        if ranks is None:
            prepared = self._fit_arguments(*arguments)
        else:
            prepared = ranks.start(self, seed, shuffle, restore_best, self._fit_arguments, *arguments)
            if seed is None:
                seed = ranks.seed
        inputs, targets, weight, samples, validation, callbacks, batch_size, epochs, initial_epoch, patience = prepared

        names = self._metric_names()
        history = {name: [] for name in names}
        if validation is not None:
            history.update({"val_" + name: [] for name in names})
        if self._schedule is not None:
            history["lr"] = []
        batches = -(-samples // batch_size)
        progress = _Progress(verbose and (ranks is None or ranks.rank == 0), epochs, batches)
        unseeded = np.random.default_rng() if seed is None else None
        # One input, one output, one unscaled loss term, no weights, one process: the term's own methods, as in
        # train_step()'s fast path, so fit() costs little more than a loop of train_step().
        plain = self._plain_term if weight is None and ranks is None else None
        if plain is not None:
            _, loss_value, loss_gradient = plain
            correct = self._terms[0][7]
            data, labels = inputs[0], targets[0]
        flat_grads = self._flat_grads
        first_step = self.step_count
        # Without comm, the state is checked now and then rather than each step's gradients (see _CleanState); a
        # model whose state is not finite to begin with has its gradients checked every step instead.
        clean = None if ranks is not None else _CleanState(self)
        if clean is not None and not clean.keep():
            clean = None

        def compute(rows):
            """Forward, loss and (for a finite loss) backward on the batch's rows: (loss, values, counts, size)."""
            if plain is not None:
                batch_labels = labels[rows]
                output = self._forward(data[rows])[0]
                loss = loss_value(output, batch_labels)
                counts = (None if correct is None else correct(output, batch_labels),)
                if -np.inf < loss < np.inf:
                    self._backward_to_step((loss_gradient(batch_labels),))
                return loss, (loss,), counts, len(batch_labels)
            values, counts, size = self._fit_batch(rows, inputs, targets, weight)
            return self._total(values), values, counts, size

        def grads_finite():
            """Whether every gradient is finite (one dot product: an overflowing sum of squares counts as not)."""
            return np.isfinite(np.vdot(flat_grads, flat_grads))

        def stop(problem, at_epoch, at_batch):
            """The FloatingPointError that stops fit() at that batch, the state being that after the last step."""
            return self._non_finite(problem, at_epoch, at_batch, batches, self.step_count > first_step, history)

        def recover():
            """The state is not finite: put the last clean one back and step its batches again, each gradient
            checked; raises FloatingPointError at the first batch whose gradients are not finite."""
            stepped_again = clean.restore()
            for again_epoch, again_batch, again_rows in stepped_again:
                loss = compute(again_rows)[0]
                if not -np.inf < loss < np.inf:
                    raise stop(f"the loss is {loss}", again_epoch, again_batch)
                if not grads_finite():
                    raise stop(_BAD_GRADIENTS, again_epoch, again_batch)
                self._apply_step()
            clean.restore()
            error = FloatingPointError(
                f"{type(self).__name__}.fit: the parameters, optimizer state or statistics became non-finite, yet "
                "stepping the same batches again from the last finite state met no NaN or infinite gradient; the "
                f"state after step {self.step_count}, the last found finite, is kept"
            )
            error.history = history
            raise error

        best_loss, best_epoch, best_params, waited = np.inf, None, None, 0
        interrupts = _HeldInterrupts()  # Ctrl-C while a step runs is raised once the step is complete
        epoch = initial_epoch
        self.stop_training = False
        found_mode, self.training = self.training, True
        found_checking = self.check_numerics
        switch = check_numerics is not None and bool(check_numerics) != found_checking
        if switch:
            self.check_numerics = check_numerics
        try:
            for epoch in range(initial_epoch, epochs):
                started = time.perf_counter()
                lr = self.lr
                if shuffle:
                    rng = unseeded if seed is None else np.random.default_rng([seed, epoch])
                    order = rng.permutation(samples)
                totals = _Totals(len(self._terms))
                for batch, start in enumerate(range(0, samples, batch_size), 1):
                    rows = order[start : start + batch_size] if shuffle else slice(start, start + batch_size)
                    if ranks is not None:
                        # This rank's share of the batch; the batch's loss and counts, and the error flags of all
                        # ranks, come back from one small Allreduce.
                        size = min(batch_size, samples - start)
                        shard = self._fit_shard(ranks, rows, size, inputs, targets, weight)
                        loss = shard.loss / size
                        if not np.isfinite(loss):
                            raise stop(f"the loss is {loss}", epoch, batch)
                        interrupts.held = True
                        ranks.sum(self._flat_grads)
                        # Every rank holds the same summed gradients, so every rank decides alike.
                        if not grads_finite():
                            raise stop(_BAD_GRADIENTS, epoch, batch)
                        self._apply_step()
                        interrupts.release()
                        totals.merge(shard)
                        if progress.due(batch):
                            progress.show(epoch, batch, self._metrics(totals), started)
                        continue
                    loss, values, counts, size = compute(rows)
                    if not -np.inf < loss < np.inf:
                        if clean is not None and not clean.finite():
                            recover()  # an earlier step's gradients were not finite: stops at that step
                        raise stop(f"the loss is {loss}", epoch, batch)
                    if clean is None and not grads_finite():
                        raise stop(_BAD_GRADIENTS, epoch, batch)
                    interrupts.held = True
                    self._apply_step()
                    interrupts.release()
                    if clean is not None and clean.stepped(epoch, batch, rows) and not clean.check():
                        recover()
                    totals.add(size, loss, values, counts)
                    if progress.due(batch):
                        progress.show(epoch, batch, self._metrics(totals), started)
                if clean is not None and not clean.keep():
                    recover()  # no epoch ends on a state that is not finite
                if ranks is not None and self.buffers:
                    # Running statistics (BatchNorm) saw only each rank's local batches: every rank takes their mean.
                    ranks.sum(self._flat_nontrainable)
                    self._flat_nontrainable /= ranks.size
                metrics = self._metrics(totals)
                if validation is not None:
                    validate = self._evaluate_checked if ranks is None else ranks.evaluate
                    validated = self._in_mode(False, validate, *validation[:2], batch_size, *validation[2:])
                    for name, value in validated.items():
                        metrics["val_" + name] = value
                if ranks is not None:
                    # Every rank holds rank 0's values bit for bit, so its decisions below are the same.
                    metrics = ranks.same(metrics)
                if self._schedule is not None:
                    metrics["lr"] = lr
                for name, value in metrics.items():
                    history[name].append(value)
                progress.end_epoch(epoch, metrics, started)
                if self._schedule is not None:
                    # The epoch is complete: step the schedule before the callbacks, so a state saved by one
                    # resumes with the next epoch's lr.
                    self.schedule_step()
                if ranks is None:
                    for callback in callbacks:
                        callback(epoch, dict(metrics))
                else:
                    ranks.callbacks(callbacks, epoch, metrics)
                if patience is not None:
                    if metrics["val_loss"] < best_loss:
                        best_loss, best_epoch, waited = metrics["val_loss"], epoch, 0
                        if restore_best:
                            # The parameters and the non-trainable state (running statistics) of the best epoch.
                            best_params = {name: value.copy() for name, value in self.params.items()}
                            best_params.update({name: value.copy() for name, value in self.buffers.items()})
                    else:
                        waited += 1
                        if waited >= patience:
                            break
                if self.stop_training:
                    progress.note(f"stopped by a callback after epoch {epoch + 1}")
                    break
        except FloatingPointError as err:
            if not hasattr(err, "history"):  # from check_numerics
                err.history = history
            raise
        except KeyboardInterrupt:
            if clean is not None and not clean.finite():
                clean.restore()  # no stepping again after a Ctrl-C: the last state found finite
            progress.note(f"interrupted in epoch {epoch + 1}; kept the last completed step ({self.step_count})")
            return history
        finally:
            interrupts.close()
            progress.close()
            self._saved = self._targets = None
            self.training = found_mode
            if switch:
                self.check_numerics = found_checking
        if best_params is not None and best_epoch != epoch:
            for name, value in best_params.items():
                np.copyto(self.params[name] if name in self.params else self.buffers[name], value)
            progress.note(f"restored the parameters of epoch {best_epoch + 1}, the lowest val_loss ({best_loss:.4f})")
        return history

    def _fit_arguments(
        self,
        x,
        y,
        sample_weight,
        callbacks,
        batch_size,
        epochs,
        initial_epoch,
        patience,
        validation_data,
        validation_split,
        seed,
        shuffle,
        restore_best,
        check_numerics,
    ):
        """fit()'s arguments checked: (inputs, targets, weight, samples, validation, callbacks, batch_size, epochs,
        initial_epoch, patience), the validation split already taken out; the seed and the flags are only checked."""
        where = f"{type(self).__name__}.fit"
        _check_seed(seed, where)
        _check_flag("shuffle", shuffle, where)
        _check_flag("restore_best", restore_best, where)
        if check_numerics is not None:
            _check_flag("check_numerics", check_numerics, where)
        inputs, targets = self._check_data(x, y, "x", "y")
        samples = len(inputs[0])
        weight = self._check_weight(sample_weight, samples, "sample_weight")
        if callbacks is None:
            callbacks = ()
        elif not isinstance(callbacks, (list, tuple)) or not all(callable(fn) for fn in callbacks):
            raise ValueError("callbacks must be a list of functions, each called as fn(epoch, logs)")
        batch_size = _check_int("batch_size", batch_size, 1)
        epochs, initial_epoch = _check_int("epochs", epochs, 0), _check_int("initial_epoch", initial_epoch, 0)
        patience = None if patience is None else _check_int("patience", patience, 0)
        validation = None
        if validation_data is not None:
            if validation_split:
                raise ValueError("pass validation_data or validation_split, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a pair (x_val, y_val) or a triple (x_val, y_val, w_val)")
            validation = self._check_data(*validation_data[:2], "x_val", "y_val")
            if len(validation_data) == 3 and validation_data[2] is not None:
                validation_weight = self._check_weight(validation_data[2], len(validation[0][0]), "w_val")
                validation = (*validation, validation_weight)
        elif validation_split:
            if not _is_real(validation_split) or not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
            keep = int(samples * (1 - validation_split))
            if keep == 0 or keep == samples:
                raise ValueError(f"validation_split={validation_split} of {samples} samples leaves a part empty")
            validation = (tuple(a[keep:] for a in inputs), tuple(t[keep:] for t in targets))
            if weight is not None:
                validation = (*validation, weight[keep:])
                weight = weight[:keep]
            inputs, targets = tuple(a[:keep] for a in inputs), tuple(t[:keep] for t in targets)
            samples = keep
        if patience is not None and validation is None:
            raise ValueError("patience needs validation: pass validation_data or validation_split")
        return inputs, targets, weight, samples, validation, callbacks, batch_size, epochs, initial_epoch, patience

    def _in_mode(self, training, method, *args, **kwargs):
        """method(*args, **kwargs) in the given mode, the current one restored afterwards."""
        if not self._uses_mode or self.training == training:
            return method(*args, **kwargs)
        found, self.training = self.training, training
        try:
            return method(*args, **kwargs)
        finally:
            self.training = found

    def evaluate(self, x, y, batch_size=None, sample_weight=None):
        """The loss and metrics on (x, y) as a dict, computed in batches (of 256 when batch_size is None). With
        sample_weight (one weight ≥ 0 per sample) the losses are mean(wᵢ·lᵢ), as fit() trains them; accuracy is not
        weighted.

        Changes no parameters, gradients or optimizer state. Its forward passes replace the one backward() would
        use, so that is cleared: backward() afterwards raises until the next loss().
        """
        self._require_loss()
        inputs, targets = self._check_data(x, y, "x", "y")
        weight = self._check_weight(sample_weight, len(inputs[0]), "sample_weight")
        batch_size = 256 if batch_size is None else _check_int("batch_size", batch_size, 1)
        try:
            return self._in_mode(False, self._evaluate_checked, inputs, targets, batch_size, weight)
        finally:
            self._saved = self._targets = None

    def predict(self, x, batch_size=None):
        """The model's output for every sample of x (a dict {output name: array} when it has several outputs),
        computed in batches (of 256 when batch_size is None).

        Changes no parameters, gradients or optimizer state. Its forward passes replace the one backward() would
        use, so that is cleared: backward() afterwards raises until the next forward() or loss().
        """
        inputs = self._check_inputs(x, allow_empty=True)
        batch_size = 256 if batch_size is None else _check_int("batch_size", batch_size, 1)
        samples = len(inputs[0])
        results = tuple(np.empty((samples, *shape), DTYPE) for shape in self.output_shapes.values())
        found_mode, self.training = self.training, False
        try:
            for start in range(0, samples, batch_size):
                outputs = self._forward(*(a[start : start + batch_size] for a in inputs))
                for result, output in zip(results, outputs):
                    result[start : start + batch_size] = output
        finally:
            self._saved = self._targets = None
            self.training = found_mode
        return self._as_outputs(results)

    def predict_proba(self, x, batch_size=None):
        """Class probabilities for every sample of x, from predict(): the softmax of the logits for a CrossEntropy
        output, the sigmoid of the logits for BCEWithLogits, the output itself for BCE (already probabilities).
        With several outputs, a dict {output: probabilities} of the outputs whose loss names classes. A model whose
        loss names no classes (MSE, Huber, L1) raises RuntimeError."""
        self._require_loss()
        kinds = {term[0]: term[9] for term in self._terms if term[9] is not None}
        if not kinds:
            losses = ", ".join(sorted({loss["type"] for loss in self.get_config()["losses"]}))
            raise RuntimeError(
                f"{type(self).__name__}.predict_proba: the loss ({losses}) names no classes; probabilities come from "
                "a CrossEntropy (softmax), BCEWithLogits (sigmoid) or BCE loss. Use predict() for the outputs."
            )
        outputs = self.predict(x, batch_size)
        if len(self._output_names) == 1:
            return _PROBABILITIES[kinds[self._output_names[0]]](outputs)
        return {name: _PROBABILITIES[kind](outputs[name]) for name, kind in kinds.items()}

    def __repr__(self):
        """What the model is: its name, inputs and outputs with their shapes, parameter count and mode."""

        def shapes(word, named):
            items = ", ".join(
                f"{name} [{', '.join(map(str, shape))}]" if len(named) > 1 else f"[{', '.join(map(str, shape))}]"
                for name, shape in named.items()
            )
            return f"{word}{'s' if len(named) > 1 else ''} {items}"

        mode = "training" if self.training else "inference"
        return (
            f"<{type(self).__name__}: {shapes('input', self.input_shapes)} -> {shapes('output', self.output_shapes)}, "
            f"{len(self._flat_params):,} parameters, {mode} mode>"
        )

    # ---- state ------------------------------------------------------------------------------------------

    def _state_layout(self):
        """key → (shape, kind) of every state_dict() entry, in its order; kind is "array" (parameters and optimizer
        slots), "count" (the step count) or "hyperparameter"."""
        layout = {f"params/{name}": (value.shape, "array") for name, value in self.params.items()}
        for name, slots in self._slots.items():
            for slot, value in slots.items():
                layout[f"optimizer/{name}/{slot}"] = (value.shape, "array")
        layout["optimizer/step_count"] = ((), "count")
        if self._schedule is not None:
            layout["optimizer/schedule_epoch"] = ((), "count")
        for name, _, _ in self._hyperparameters:
            layout[f"optimizer/{name}"] = ((), "hyperparameter")
        for name, value in self.buffers.items():
            layout[f"buffers/{name}"] = (value.shape, "array")
        if self._random:
            layout["buffers/rng"] = ((6,), "rng")
        return layout

    def _check_entry(self, key, shape, dtype, expected, where):
        """A ValueError unless an entry of this shape and dtype may hold state `key` (of the expected layout)."""
        expected_shape, kind = expected
        if dtype.kind not in {"count": "iu", "rng": "u"}.get(kind, "iuf"):
            what = {"count": "an integer", "rng": "unsigned integers (a generator's state)"}.get(
                kind, "real numbers (floats or integers)"
            )
            raise ValueError(f"{where}: entry {key!r} holds {_dtype_text(dtype)}; expected {what}")
        if tuple(shape) != expected_shape:
            raise ValueError(f"{where}: entry {key!r} has shape {tuple(shape)}, expected {expected_shape}")

    def _checked_state(self, state, where):
        """The arrays and values load_state_dict(state) would set, every one checked; raises before anything changes.

        Returns ([(array to update, new value)], {count attribute: value}, {hyperparameter: value}, generator)."""
        if not hasattr(state, "keys"):
            raise TypeError(f"{where}: expected a dict as state_dict() returns, got {type(state).__name__}")
        layout = self._state_layout()
        missing = [key for key in layout if key not in state]
        unexpected = sorted(str(key) for key in state if key not in layout)
        if missing:
            raise KeyError(f"{where}: the state is missing {missing[0]!r} ({len(missing)} missing in all)")
        if unexpected:
            raise KeyError(f"{where}: the state has an unexpected key {unexpected[0]!r}")
        given = {}
        for key, expected in layout.items():
            try:
                value = np.asarray(state[key])
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: entry {key!r} is not an array: {err}") from None
            self._check_entry(key, value.shape, value.dtype, expected, where)
            given[key] = value
        arrays = []
        targets = {f"params/{name}": value for name, value in self.params.items()}
        for name, slots in self._slots.items():
            targets.update({f"optimizer/{name}/{slot}": value for slot, value in slots.items()})
        targets.update({f"buffers/{name}": value for name, value in self.buffers.items()})
        for key, target in targets.items():
            value = given[key]
            with np.errstate(over="ignore"):
                converted = value.astype(DTYPE)
            if not np.array_equal(np.isfinite(converted), np.isfinite(value)):
                raise ValueError(f"{where}: entry {key!r} has values beyond the range of {np.dtype(DTYPE).name}")
            arrays.append((target, converted))
        counts = {}
        for name in ("step_count", "schedule_epoch"):
            key = f"optimizer/{name}"
            if key in given:
                count = given[key][()]
                if count < 0:
                    raise ValueError(f"{where}: entry {key!r} must be an integer >= 0, got {count}")
                counts[name] = int(count)
        model = type(self).__name__
        hyperparameters = {}
        for name, kind, rule in self._hyperparameters:
            try:
                hyperparameters[name] = _hyperparameter(model, name, given[f"optimizer/{name}"], kind, rule)
            except ValueError as err:
                raise ValueError(f"{where}: entry 'optimizer/{name}': {err}") from None
        generator = None
        if self._random:
            generator = np.random.default_rng()
            try:
                generator.bit_generator.state = _generator_state_dict(given["buffers/rng"])
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: entry 'buffers/rng' is not a generator state: {err}") from None
        return arrays, counts, hyperparameters, generator

    def _apply_state(self, checked):
        """Set what _checked_state() returned: nothing here can fail halfway."""
        arrays, counts, hyperparameters, generator = checked
        for target, value in arrays:
            np.copyto(target, value)
        for name, value in counts.items():
            setattr(self, name, value)
        for name, value in hyperparameters.items():
            setattr(self, name, value)
        if generator is not None:
            self._rng = generator

    # ---- checks -----------------------------------------------------------------------------------------

    def _require_loss(self, advice=""):
        if not self.has_loss:
            name = type(self).__name__
            message = f"model {name} has no loss; add e.g. 'loss CrossEntropy' to the .nn file and recompile"
            raise RuntimeError(message + advice)

    def _by_name(self, value, names, what, plural):
        """A dict keyed by `names`, or a tuple/list in their order, as a tuple; one value when there is one name."""
        model = type(self).__name__
        if len(names) == 1 and not isinstance(value, dict):
            return (value,)
        if isinstance(value, dict):
            missing = [n for n in names if n not in value]
            unexpected = [k for k in value if k not in names]
            if missing:
                raise ValueError(f"{model}: {what} '{missing[0]}' is missing; expected {plural} for {list(names)}")
            if unexpected:
                raise ValueError(f"{model}: unexpected {what} {unexpected[0]!r}; expected {plural} for {list(names)}")
            return tuple(value[n] for n in names)
        if isinstance(value, (tuple, list)) and len(value) == len(names):
            return tuple(value)
        raise ValueError(
            f"{model}: {len(names)} {plural} are needed ({', '.join(names)}): pass a dict {{name: array}} "
            f"or a tuple in that order"
        )

    def _check_inputs(self, x, allow_empty=False):
        """The input arrays as a tuple in declaration order, each converted to DTYPE and shape-checked."""
        if len(self._input_names) == 1 and not isinstance(x, dict):
            shape = self.input_shape
            if (
                type(x) is np.ndarray
                and x.dtype == DTYPE
                and x.shape[1:] == shape
                and x.ndim == len(shape) + 1
                and not self._integer_inputs
            ) and (x.shape[0] or allow_empty):
                return (x,)  # the common case, checked in one line
            return (self._check_input(self._input_names[0], x, allow_empty),)
        arrays = self._by_name(x, self._input_names, "input", "inputs")
        checked = [self._check_input(name, a, allow_empty) for name, a in zip(self._input_names, arrays)]
        if len({len(a) for a in checked}) > 1:
            sizes = ", ".join(f"{n}: {len(a)}" for n, a in zip(self._input_names, checked))
            raise ValueError(f"{type(self).__name__}: the inputs must have the same batch size, got {sizes}")
        return tuple(checked)

    def _check_input(self, name, array, allow_empty):
        """One input as a DTYPE array of shape (batch, *its shape); a ValueError naming the problem otherwise."""
        model = type(self).__name__
        shape = self.input_shapes[name]
        which = f"input '{name}'" if len(self._input_names) > 1 else "input"
        if name in self._integer_inputs:
            array = _indices(array, f"{model}: {which}")
        elif not (isinstance(array, np.ndarray) and array.dtype == DTYPE):
            given = np.asarray(array)
            if given.dtype.kind not in "iufb":
                # Complex numbers would lose their imaginary part, strings would be parsed as numbers.
                what = "complex" if given.dtype.kind == "c" else f"of dtype {given.dtype}"
                raise ValueError(f"{model}: {which} is {what}; the model takes real numbers")
            array = given.astype(DTYPE, copy=False)
        if array.shape[1:] != shape or array.ndim != len(shape) + 1:
            hint = ""
            if array.shape == shape:
                one = "x[None]" if len(self._input_names) == 1 else f"x['{name}'][None]"
                hint = f"; for one sample add the batch axis: {one} has shape {(1, *shape)}"
            raise ValueError(f"{model}: wrong {which} shape: expected {_shape_text(shape)}, got {array.shape}{hint}")
        if array.shape[0] == 0 and not allow_empty:
            raise ValueError(f"{model}: {which} is an empty batch")
        return array

    def _check_targets(self, y, batch):
        """The targets of every loss term as a tuple in the order of _loss_terms, each checked by its loss."""
        if len(self._terms) == 1 and not isinstance(y, dict):
            return (self._checked_target(self._terms[0][4], y, batch),)
        outputs = tuple(term[0] for term in self._terms)
        arrays = self._by_name(y, outputs, "target", "targets")
        several = len(self._terms) > 1
        return tuple(
            self._checked_target(term[4], array, batch, term[0] if several else None)
            for term, array in zip(self._terms, arrays)
        )

    def _checked_target(self, check, y, batch, output=None):
        """One loss term's targets as its loss's check returns them; a ValueError naming the model (and the output,
        when given) for complex values or anything the check refuses."""
        if y.dtype.kind == "c" if type(y) is np.ndarray else np.iscomplexobj(y):
            which = "targets" if output is None else f"targets of output '{output}'"
            raise ValueError(f"{type(self).__name__}: {which} are complex; the losses take real numbers")
        try:
            return check(y, batch)
        except ValueError as err:
            where = "" if output is None else f"targets of output '{output}': "
            raise ValueError(f"{type(self).__name__}: {where}{err}") from None

    def _check_weight(self, sample_weight, samples, name):
        """Per-sample weights as a DTYPE vector of length samples: finite numbers ≥ 0 (booleans count as 0 and 1);
        None (no weights) as it is."""
        if sample_weight is None:
            return None
        model = type(self).__name__
        weight = np.asarray(sample_weight)
        if weight.dtype.kind not in "biuf":
            raise ValueError(f"{model}: {name} must hold real numbers, got {_dtype_text(weight.dtype)}")
        if weight.shape != (samples,):
            raise ValueError(f"{model}: {name} must hold one weight per sample, shape ({samples},), got {weight.shape}")
        weight = weight.astype(DTYPE)
        if not (np.isfinite(weight).all() and (weight >= 0).all()):
            bad = int(np.argmin(np.isfinite(weight) & (weight >= 0)))
            raise ValueError(f"{model}: {name} must hold finite weights >= 0, got {weight[bad]} for sample {bad}")
        return weight

    def _check_douts(self, dout):
        """backward(dout): one gradient per output, each of that output's shape for the current batch."""
        arrays = self._by_name(dout, self._output_names, "gradient", "gradients")
        batch = len(self._ws["ones"])
        douts = []
        for name, array in zip(self._output_names, arrays):
            which = f"dout['{name}']" if len(self._output_names) > 1 else "dout"
            if np.iscomplexobj(array):
                raise ValueError(f"{type(self).__name__}: {which} is complex; gradients are real numbers")
            # A copy: backward works in place on its gradient arrays.
            array = np.array(array, dtype=DTYPE)
            expected = (batch, *self.output_shapes[name])
            if array.shape != expected:
                raise ValueError(f"{type(self).__name__}: {which} must have shape {expected}, got {array.shape}")
            douts.append(array)
        return tuple(douts)

    def _check_data(self, x, y, x_name, y_name):
        """x and y checked as a whole: shapes, equal lengths, finite values, valid targets."""
        inputs = self._check_inputs(x)
        samples = len(inputs[0])
        model = type(self).__name__
        outputs = tuple(term[0] for term in self._terms)
        for array in self._by_name(y, outputs, "target", "targets"):
            array = np.asarray(array)
            if array.ndim == 0 or len(array) != samples:
                raise ValueError(
                    f"{model}: {x_name} and {y_name} must have the same length, got {samples} samples in {x_name}"
                    f" and {len(array) if array.ndim else 'a scalar'} in {y_name}"
                )
        targets = self._check_targets(y, samples)
        found = _non_finite_sample(_named(x_name, self._input_names, inputs) + _named(y_name, outputs, targets))
        if found:
            raise ValueError(f"{model}: {found[0]} has a NaN or infinite value in sample {found[1]}")
        return inputs, targets

    def _refuse_non_finite_targets(self, targets):
        """A ValueError when a target has a NaN or infinite value (looked for only once the loss is not finite)."""
        found = _non_finite_sample(_named("y", [term[0] for term in self._terms], targets))
        if found:
            raise ValueError(f"{type(self).__name__}: {found[0]} has a NaN or infinite value in sample {found[1]}")

    def _non_finite_step(self, loss, inputs, targets):
        """The error train_step() raises for a non-finite loss, naming its cause when it is in the data."""
        self._refuse_non_finite_targets(targets)
        found = _non_finite_sample(_named("x", self._input_names, inputs))
        cause = (
            f"{found[0]} has a NaN or infinite value in sample {found[1]}"
            if found
            else "inputs and targets are finite: values overflowed inside the model; a lower learning rate may help"
        )
        return FloatingPointError(
            f"{type(self).__name__}.train_step: the loss is {loss} ({cause}); no update applied, the parameters and "
            "optimizer state are unchanged"
        )

    def _as_inputs(self, arrays):
        return arrays[0] if len(arrays) == 1 else dict(zip(self._input_names, arrays))

    def _as_outputs(self, arrays):
        return arrays[0] if len(arrays) == 1 else dict(zip(self._output_names, arrays))

    # ---- losses -----------------------------------------------------------------------------------------

    def _loss_values(self, outputs, targets, weight=None):
        """Each loss term's value (unscaled), in the order of _loss_terms; with per-sample weights, mean(wᵢ·lᵢ)."""
        if weight is not None:
            return tuple(
                term[8](outputs[term[1]], target, self._weight_for(weight, term[0]))
                for term, target in zip(self._terms, targets)
            )
        if len(self._terms) == 1:
            term = self._terms[0]
            return (term[5](outputs[term[1]], targets[0]),)
        return tuple(term[5](outputs[term[1]], target) for term, target in zip(self._terms, targets))

    def _total(self, values):
        """The loss: Σ scale · term."""
        if len(values) == 1:
            scale = self._terms[0][2]
            return values[0] if scale == 1 else scale * values[0]
        return float(sum(term[2] * value for term, value in zip(self._terms, values)))

    def _loss_gradients(self, targets, weight=None):
        """dL/d(output) for every output: each term's gradient times its scale; zeros for an output without a
        loss term. With per-sample weights, each sample's rows of the unweighted gradient times its weight."""
        if weight is not None:
            douts = self._loss_gradients(targets)
            for term in self._terms:
                douts[term[1]][...] *= self._weight_for(weight, term[0])
            return douts
        if len(self._terms) == 1 and len(self._output_names) == 1:
            scale, gradient = self._terms[0][2], self._terms[0][6]
            dz = gradient(targets[0])
            if scale != 1:
                dz *= scale
            return (dz,)
        douts = [None] * len(self._output_names)
        for (_, index, scale, _, _, _, gradient, *_), target in zip(self._terms, targets):
            dz = gradient(target)
            if scale != 1:
                dz *= scale
            douts[index] = dz
        for index, dz in enumerate(douts):
            if dz is None:
                shape = self.output_shapes[self._output_names[index]]
                douts[index] = np.zeros((len(self._ws["ones"]), *shape), DTYPE)
        return tuple(douts)

    def _weight_for(self, weight, output):
        """Per-sample weights shaped (batch, 1, ...) to broadcast against an output's arrays."""
        return weight.reshape((-1,) + (1,) * len(self.output_shapes[output]))

    def _counts(self, outputs, targets):
        """(correct, compared) for each loss term with a metric, None for the others; after the loss values of the
        same batch."""
        return tuple(
            None if term[7] is None else term[7](outputs[term[1]], target) for term, target in zip(self._terms, targets)
        )

    def _metric_names(self):
        if len(self._terms) == 1:
            return ["loss"] + ([self._terms[0][3]] if self._terms[0][3] else [])
        names = ["loss"]
        for output, _, _, metric, *_ in self._terms:
            names.append(f"{output}_loss")
            if metric:
                names.append(f"{output}_{metric}")
        return names

    def _metrics(self, totals):
        """The mean loss and metrics of the samples seen, keyed as in the history."""
        values = {"loss": totals.loss / totals.samples}
        for i, (output, _, _, metric, *_) in enumerate(self._terms):
            prefix = "" if len(self._terms) == 1 else output + "_"
            if prefix:
                values[prefix + "loss"] = totals.terms[i] / totals.samples
            if metric:
                values[prefix + metric] = totals.correct[i] / max(totals.compared[i], 1)
        return values

    # ---- training internals -----------------------------------------------------------------------------

    def _backward_to_step(self, douts, share=1.0):
        """Backward from the loss gradients douts (arrays of this step, scaled in place), overwriting every gradient
        (a zero_grad without the memset), for _apply_step() to apply; the gradients come out times `share` (a rank's
        share of the batch under comm).

        With plain SGD (_folds_lr, momentum and weight decay 0) the update is p = p - lr · g. Backward is linear in
        the loss gradient, so starting it from lr · dL/dz makes every gradient come out as lr · g, and the update is
        then one subtraction instead of a multiplication and a subtraction over all parameters. The public grads
        divides lr back out when read (_settle_grads), so it holds g as before, to rounding. `share` rides along the
        same way, on the loss gradients rather than on every parameter's."""
        self._accumulate = False
        self._grads_scale = None  # the gradients being overwritten hold no lr yet
        lr = self._lr_to_fold()
        scale = share if lr is None else lr * share
        if scale != 1:
            for dz in douts:
                dz *= scale
        self._backward(douts, False)
        self._grads_scale = lr
        self._grads_problem = None

    def _lr_to_fold(self):
        """lr while the update is p = p - lr · g (_folds_lr, momentum and weight decay 0), else None."""
        if self._folds_lr and not self.momentum and not self.weight_decay:
            return self.lr
        return None

    def _apply_step(self):
        """The optimizer's update from the gradients _backward_to_step() computed."""
        if self._grads_scale is None:
            self._update()
        else:
            self.step_count += 1
            self._flat_params -= self._flat_grads

    def _settle_grads(self):
        """Gradients holding lr · g after a step with lr folded in: divided back to g (one pass, only when they are
        read or added to)."""
        scale = self._grads_scale
        if scale is not None:
            self._grads_scale = None
            self._flat_grads /= scale

    def _workspace(self, batch):
        """Arrays for a batch size, made once and reused so steady-state steps allocate almost nothing."""
        workspace = self._workspaces.get(batch)
        if workspace is None:
            if len(self._workspaces) >= 4:
                self._workspaces.pop(next(iter(self._workspaces)))
            workspace = {key: _aligned_full((batch, *shape), fill, dtype) for key, shape, dtype, fill in self._buffers}
            for key, shape, dtype, fill in self._batch_last_buffers:
                workspace[key] = _aligned_full((*shape, batch), fill, dtype)
            # Its length tells backward(dout) the batch size of this workspace.
            workspace["ones"] = np.ones(batch, DTYPE)
            self._workspaces[batch] = workspace
        return workspace

    def _fit_batch(self, rows, inputs, targets, weight=None, share=1.0):
        """train_step() up to the update, on the given rows of checked arrays: forward, loss and, if the loss is
        finite, backward (_backward_to_step(), for _apply_step(); its gradients times `share`).

        Returns the loss terms' values, metric counts and the number of samples."""
        inputs = tuple(a[rows] for a in inputs)
        targets = tuple(t[rows] for t in targets)
        weight = None if weight is None else weight[rows]
        outputs = self._forward(*inputs)
        self._targets = targets
        values = self._loss_values(outputs, targets, weight)
        counts = self._counts(outputs, targets)
        if np.isfinite(self._total(values)):
            self._backward_to_step(self._loss_gradients(targets, weight), share)
        return values, counts, len(targets[0])

    def _evaluate_checked(self, inputs, targets, batch_size, weight=None):
        """Metrics over checked arrays, batch by batch; losses are means over samples (of wᵢ·lᵢ with weights)."""
        return self._metrics(self._evaluate_totals(inputs, targets, batch_size, weight))

    def _evaluate_totals(self, inputs, targets, batch_size, weight=None):
        """_evaluate_checked()'s sums (a _Totals)."""
        totals = _Totals(len(self._terms))
        for start in range(0, len(inputs[0]), batch_size):
            outputs = self._forward(*(a[start : start + batch_size] for a in inputs))
            batch_targets = tuple(t[start : start + batch_size] for t in targets)
            batch_weight = None if weight is None else weight[start : start + batch_size]
            values = self._loss_values(outputs, batch_targets, batch_weight)
            counts = self._counts(outputs, batch_targets)
            totals.add(len(batch_targets[0]), self._total(values), values, counts)
        return totals

    def _fit_shard(self, ranks, rows, batch, inputs, targets, weight):
        """fit()'s step with comm, up to the gradients' Allreduce: _fit_batch() on this rank's share of the batch's
        rows (a batch of `batch` samples), its gradient (a mean over its share) times its share of the batch;
        then one small Allreduce of every rank's loss sums, metric counts and error flag. Returns the batch's
        _Totals, the same on every rank; an error on any rank raises on every rank."""
        lo, hi = ranks.share(batch)
        rows = rows[lo:hi] if type(rows) is not slice else slice(rows.start + lo, rows.start + hi)
        part = _Totals(len(self._terms))
        error = None
        try:
            if hi > lo:
                values, counts, size = self._fit_batch(rows, inputs, targets, weight, (hi - lo) / batch)
                part.add(size, self._total(values), values, counts)
            else:
                # No sample here (a batch smaller than the number of ranks): this rank adds nothing.
                self._flat_grads.fill(0)
                self._grads_scale = self._lr_to_fold()  # as on the other ranks, whose gradients this joins
                self._grads_problem = None
        except Exception as err:  # noqa: BLE001 - raised again, on every rank, by agree/reduce/raise_shared
            error = err
        return ranks.reduce(part, error)

    def _non_finite(self, problem, epoch, batch, batches, stepped, history):
        """The error for a non-finite loss or gradient in fit(): the batch's step is not applied (or, found later,
        taken back with every step after it; see _CleanState)."""
        message = f"{problem} at epoch {epoch + 1}, batch {batch} of {batches}; training stopped without its step"
        if not stepped:
            message += ", before any step of this fit(), so the parameters are as fit() found them"
        else:
            message += (
                f"; parameters and optimizer state are those after step {self.step_count}, the last completed "
                "(fit() keeps no step made from a NaN or infinite gradient)"
            )
        error = FloatingPointError(f"{type(self).__name__}.fit: {message}")
        error.history = history
        return error


_BAD_GRADIENTS = "the gradients have a NaN or infinite value (or a squared norm that overflows)"


class _HeldInterrupts:
    """fit()'s Ctrl-C handling: while `held` is True, a SIGINT is remembered instead of raised, and release() raises
    it once the step is complete, so a step is never left half-applied. Installed only in the main thread over a
    Python-level SIGINT handler (the default raises KeyboardInterrupt), which it calls when not holding; close()
    puts that handler back."""

    def __init__(self):
        self.held = False
        self.pending = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                signal.signal(signal.SIGINT, self._handle)
                self.previous = previous

    def _handle(self, signum, frame):
        if self.held:
            self.pending = True
        else:
            self.previous(signum, frame)

    def release(self):
        self.held = False
        if self.pending:
            self.pending = False
            self.previous(signal.SIGINT, None)

    def close(self):
        self.held = False
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


class _CleanState:
    """fit()'s guarantee that no step leaves a NaN or infinite value in the model, without a pass over every
    gradient before every step: the state (parameters, optimizer state, statistics) is checked every CHECK_EVERY
    steps, at the end of every epoch and at a non-finite loss, and a copy of it (with the step count and generator)
    is taken, once found finite, when fit() starts, at the end of every epoch and every COPY_EVERY steps; the batches
    stepped since the copy are recorded. A check that finds a NaN or an infinity puts the copy back, and fit() steps
    those batches again with each one's gradients checked (steps are deterministic), stopping before the first whose
    gradients are not finite. (A check costs a dot product per array, a copy twice that; both are rare enough to
    cost under 1 % of fit().)"""

    CHECK_EVERY = 64
    COPY_EVERY = 1024

    def __init__(self, model):
        self.model = model
        extra = getattr(model, "_flat_nontrainable", None)
        self.arrays = [model._flat_params, *model._flat_slots.values(), *([] if extra is None else [extra])]
        self.copies = [np.empty_like(array) for array in self.arrays]
        self.step_count = 0
        self.generator = None
        self.since = []  # (epoch, batch, rows) of the steps since the copy

    def finite(self):
        """Whether every array of the state is finite (a dot product each; an exact look only if it overflows)."""
        return all(np.isfinite(np.vdot(a, a)) or np.isfinite(a).all() for a in self.arrays)

    def keep(self):
        """Copy the state if it is finite; returns whether it was."""
        if not self.finite():
            return False
        for copy, array in zip(self.copies, self.arrays):
            np.copyto(copy, array)
        self.step_count = self.model.step_count
        self.generator = self.model._rng.bit_generator.state if self.model._random else None
        self.since = []
        return True

    def stepped(self, epoch, batch, rows):
        """Record a step; returns whether the state is due for a check."""
        self.since.append((epoch, batch, rows))
        return len(self.since) % self.CHECK_EVERY == 0

    def check(self):
        """Whether the state is finite; copied too when the copy is COPY_EVERY steps old."""
        return self.keep() if len(self.since) >= self.COPY_EVERY else self.finite()

    def restore(self):
        """Put the copy back; returns the steps recorded since it (forgotten here)."""
        for copy, array in zip(self.copies, self.arrays):
            np.copyto(array, copy)
        self.model.step_count = self.step_count
        if self.generator is not None:
            self.model._rng.bit_generator.state = self.generator
        since, self.since = self.since, []
        return since


class _Gradients(collections.abc.Mapping):
    """model.grads: parameter name → gradient array (a view into the model's flat gradient array), as PyTorch's
    .grad. Reading it first divides out a learning rate that train_step() or fit() folded into backward."""

    __slots__ = ("_model",)

    def __init__(self, model):
        self._model = model

    def __getitem__(self, name):
        self._model._settle_grads()
        return self._model._grads[name]

    def __iter__(self):
        return iter(self._model._grads)

    def __len__(self):
        return len(self._model._grads)

    def __repr__(self):
        self._model._settle_grads()
        return repr(self._model._grads)


class _Totals:
    """Running sums over the batches of an epoch: samples, total loss, each term's loss and metric counts."""

    def __init__(self, terms):
        self.samples = 0
        self.loss = 0.0
        self.terms = [0.0] * terms
        self.correct = [0] * terms
        self.compared = [0] * terms

    def add(self, samples, loss, values, counts):
        self.samples += samples
        self.loss += loss * samples
        for i, value in enumerate(values):
            self.terms[i] += value * samples
            if counts[i] is not None:
                self.correct[i] += counts[i][0]
                self.compared[i] += counts[i][1]

    def vector(self):
        """The sums as one float64 array (for an Allreduce): samples, loss, then per term loss, correct, compared."""
        return np.array([self.samples, self.loss, *self.terms, *self.correct, *self.compared], np.float64)

    def merge(self, other):
        """Add another _Totals' sums to these."""
        self.samples += other.samples
        self.loss += other.loss
        for i in range(len(self.terms)):
            self.terms[i] += other.terms[i]
            self.correct[i] += other.correct[i]
            self.compared[i] += other.compared[i]

    @classmethod
    def from_vector(cls, vector):
        """The _Totals whose vector() is `vector`."""
        terms = (len(vector) - 2) // 3
        totals = cls(terms)
        values = vector.tolist()
        totals.samples, totals.loss = int(values[0]), values[1]
        totals.terms = values[2 : 2 + terms]
        totals.correct = [int(v) for v in values[2 + terms : 2 + 2 * terms]]
        totals.compared = [int(v) for v in values[2 + 2 * terms :]]
        return totals


# The exceptions an error on one rank is raised as on the others (same type and message); any other type arrives as
# a RuntimeError carrying its name and message.
_SHARED_ERRORS = {
    kind.__name__: kind
    for kind in (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        FloatingPointError,
        ZeroDivisionError,
        OverflowError,
        MemoryError,
        AttributeError,
        NotImplementedError,
        AssertionError,
        RuntimeError,
    )
}


class _Ranks:
    """fit(comm=...)'s side of data-parallel training over MPI, through the communicator's Get_rank, Get_size, Bcast
    and Allreduce (an mpi4py communicator, or any object with those four methods): shares of batches, sums over
    ranks, rank 0's state broadcast, and errors on one rank raised on all."""

    def __init__(self, comm):
        for method in ("Get_rank", "Get_size", "Bcast", "Allreduce"):
            if not callable(getattr(comm, method, None)):
                raise TypeError(
                    f"comm must be an MPI communicator such as mpi4py's MPI.COMM_WORLD (with Get_rank, Get_size, "
                    f"Bcast and Allreduce); {type(comm).__name__} has no {method}()"
                )
        self.comm = comm
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())
        # mpi4py's in-place marker, from the module the communicator's class comes from: the generated module never
        # imports mpi4py. A communicator without one gets a copy as the send buffer.
        self.in_place = getattr(sys.modules.get(type(comm).__module__), "IN_PLACE", None)
        self.model = self.seed = None

    def share(self, n):
        """(start, stop) of this rank's contiguous share of n samples: the first n % size ranks take one more."""
        quotient, remainder = divmod(n, self.size)
        start = self.rank * quotient + min(self.rank, remainder)
        return start, start + quotient + (self.rank < remainder)

    def sum(self, array):
        """Replace array by its sum over all ranks (one Allreduce)."""
        if self.in_place is None:
            self.comm.Allreduce(array.copy(), array)
        else:
            self.comm.Allreduce(self.in_place, array)

    def start(self, model, seed, shuffle, restore_best, prepare, *args):
        """prepare(*args) (fit()'s checks) on every rank, agreeing that it passed and that every rank asks for the
        same training; then rank 0's parameters, optimizer state and buffers on every rank, a shared seed when seed
        is None, and each rank's own Dropout stream. Returns prepare's result."""
        self.model = model
        prepared, error = None, None
        try:
            prepared = prepare(*args)
        except Exception as err:  # noqa: BLE001 - raised again, on every rank, by agree
            error = err
        self.agree(error)
        weight, samples, validation, callbacks, batch_size, epochs, initial_epoch, patience = prepared[2:]
        seed_key = -1 if seed is None else int(seed) % (1 << 62)  # prepare() has checked seed
        asked = {
            "the number of samples": samples,
            "batch_size": batch_size,
            "epochs": epochs,
            "initial_epoch": initial_epoch,
            "seed": seed_key,
            "shuffle": bool(shuffle),
            "the number of validation samples": -1 if validation is None else len(validation[0][0]),
            "patience": -1 if patience is None else patience,
            "restore_best": bool(restore_best),
            "sample_weight": weight is not None,
            "the number of callbacks": len(callbacks),
            "the number of parameters": len(model._flat_params),
        }
        mine = np.array(list(asked.values()), np.int64)
        first = mine.copy()
        self.comm.Bcast(first, root=0)
        differ = [name for name, a, b in zip(asked, mine, first) if a != b]
        if differ:
            error = ValueError(
                f"{type(model).__name__}.fit: rank {self.rank} was called with another {', '.join(differ)} than "
                "rank 0; every rank must pass the same data and arguments"
            )
        self.agree(error)
        comm = self.comm
        comm.Bcast(model._flat_params, root=0)
        for flat in model._flat_slots.values():
            comm.Bcast(flat, root=0)
        if model.buffers:
            comm.Bcast(model._flat_nontrainable, root=0)
        scalars = [("step_count", "int")]
        if model._schedule is not None:
            scalars.append(("schedule_epoch", "int"))
        scalars += [(name, kind) for name, kind, _ in model._hyperparameters]
        values = np.array([getattr(model, name) for name, _ in scalars], np.float64)
        comm.Bcast(values, root=0)
        for (name, kind), value in zip(scalars, values.tolist()):
            setattr(model, name, int(value) if kind == "int" else value)
        if seed is None:
            # Every rank must shuffle alike: rank 0 draws the seed.
            shared = np.random.default_rng().integers(1 << 62, size=1) if self.rank == 0 else np.zeros(1, np.int64)
            comm.Bcast(shared, root=0)
            self.seed = int(shared[0])
        if model._random:
            # Dropout: rank 0 keeps the model's stream, rank r draws from a stream spawned from it for rank r.
            words = _generator_state(model._rng)
            comm.Bcast(words, root=0)
            if self.rank:
                entropy = [int(word) for word in words[:4]]
                model._rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(self.rank,)))
        return prepared

    def agree(self, error, values=()):
        """Raise on every rank when error (an exception or None) is not None on any rank; else return the sums over
        ranks of each rank's values (numbers). One small Allreduce for both."""
        sums = np.concatenate([np.zeros(self.size), np.asarray(values, np.float64)])
        sums[self.rank] = error is not None
        self.sum(sums)
        if sums[: self.size].any():
            self.raise_shared(sums[: self.size], error)
        return sums[self.size :]

    def reduce(self, part, error):
        """The sum over ranks of each rank's _Totals `part`; raises on every rank when any had an error."""
        return _Totals.from_vector(self.agree(error, part.vector()))

    def evaluate(self, inputs, targets, batch_size, weight=None):
        """_evaluate_checked() sharded: each rank evaluates a contiguous share, the sums are reduced."""
        model = self.model
        lo, hi = self.share(len(inputs[0]))
        part, error = _Totals(len(model._terms)), None
        try:
            if hi > lo:
                shard = None if weight is None else weight[lo:hi]
                part = model._evaluate_totals(
                    tuple(a[lo:hi] for a in inputs), tuple(t[lo:hi] for t in targets), batch_size, shard
                )
        except Exception as err:  # noqa: BLE001 - raised again, on every rank, by agree/reduce/raise_shared
            error = err
        return model._metrics(self.reduce(part, error))

    def same(self, metrics):
        """metrics (a dict of numbers) as rank 0 has them, on every rank bit for bit (one small Bcast)."""
        values = np.array(list(metrics.values()), np.float64)
        self.comm.Bcast(values, root=0)
        return dict(zip(metrics, values.tolist()))

    def callbacks(self, callbacks, epoch, metrics):
        """The callbacks on every rank; an error on one raises on all, and a stop_training set on one stops all."""
        if not callbacks:
            return
        model, error = self.model, None
        try:
            for callback in callbacks:
                callback(epoch, dict(metrics))
        except Exception as err:  # noqa: BLE001 - raised again, on every rank, by agree/reduce/raise_shared
            error = err
        model.stop_training = bool(self.agree(error, [model.stop_training])[0])

    def raise_shared(self, flags, error):
        """Raise, on every rank, the error of the first rank that had one (its type and message, two Bcasts);
        error.rank names that rank."""
        root = int(np.flatnonzero(flags)[0])
        text = b""
        if self.rank == root:
            args = error.args
            message = args[0] if len(args) == 1 and isinstance(args[0], str) else str(error)
            text = f"{type(error).__name__}\n{message}".encode()
        length = np.array([len(text)], np.int64)
        self.comm.Bcast(length, root=root)
        data = np.frombuffer(text, np.uint8).copy() if self.rank == root else np.empty(int(length[0]), np.uint8)
        self.comm.Bcast(data, root=root)
        if self.rank == root:
            try:
                error.rank = root
            except AttributeError:
                pass
            raise error
        name, _, message = data.tobytes().decode().partition("\n")
        kind = _SHARED_ERRORS.get(name)
        shared = kind(message) if kind else RuntimeError(f"{name}: {message}")
        shared.rank = root
        raise shared
