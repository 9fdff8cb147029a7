"""Generate docs/layers.md, the layer reference, from the registry so it cannot drift from the code.

Run `python -m nncompile.docs > docs/layers.md`; a test checks the file is up to date.
"""

from __future__ import annotations

from .optimizers import CLIP_FORMULAS
from .registry import INITS, LAYERS, LOSSES, OPTIMIZERS, SCHEDULES, canonical, load_all


def _args_table(entry) -> list[str]:
    if not entry.args:
        return ["No arguments.", ""]
    lines = ["| argument | type | default | meaning |", "|---|---|---|---|"]
    for arg in entry.args:
        default = "required" if arg.required else f"`{arg.shown_default}`"
        lines.append(f"| `{arg.name}` | {arg.type} | {default} | {arg.doc} |")
    return lines + [""]


def _section(entry, extra: list[str], formula_label: str = "Forward") -> list[str]:
    title = entry.name + (f" (alias: {', '.join(entry.aliases)})" if entry.aliases else "")
    lines = [f"### {title}", "", entry.summary, "", f"Signature: `{entry.signature()}`", ""]
    if entry.positional_forms is not None:
        forms = ", ".join(f"`{entry.name}({', '.join(form)})`" for form in entry.positional_forms if form)
        lines += [f"Positional forms: {forms}; any other argument by keyword.", ""]
    lines += _args_table(entry)
    lines += extra
    if entry.forward_formula:
        lines += [f"{formula_label}:", "", f"    {entry.forward_formula}", ""]
    if entry.backward_formulas:
        lines += ["Backward:", ""] + [f"    {f}" for f in entry.backward_formulas] + [""]
    return lines


def render() -> str:
    load_all()
    lines = [
        "# Layer reference",
        "",
        "Generated from the registry by `python -m nncompile.docs > docs/layers.md`; do not edit by hand.",
        "Shapes are per sample: the batch axis is implicit and leading. The formulas are the ones the generated",
        "code carries beside its forward and backward blocks.",
        "",
        "## Layers",
        "",
    ]
    for layer in canonical(LAYERS):
        extra = [
            f"Inputs: {layer.arity_text()}"
            + (", written as a tuple: `(a, b) -> " + layer.name + "`" if layer.arity[0] > 1 else ""),
            "",
        ]
        if layer.shape_rule:
            extra += [f"Shape: {layer.shape_rule}", ""]
        if layer.param_layout:
            extra += [f"Parameters: {layer.param_layout}", ""]
        lines += _section(layer, extra)
    lines += ["## Losses", ""]
    for loss in canonical(LOSSES):
        lines += _section(loss, [f"Targets: {loss.targets}", ""])
    lines += [
        "## Optimizers",
        "",
        "Each updates all parameters in place as its torch.optim namesake does. Every optimizer also takes",
        "`clip_norm=` or `clip_value=` (one of them): the gradients are clipped before the update (and before weight",
        "decay joins them), in place, as `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_` clip them; without",
        "either, no clipping code is generated. The numbers are hyperparameters, attributes of the model changeable",
        "between steps (`model.lr = 0.01`); the switches (`nesterov`, `amsgrad`, `centered`) are fixed when compiling.",
        "",
        "Clipping:",
        "",
        *[f"    {formula}" for formula in CLIP_FORMULAS],
        "",
    ]
    for optimizer in canonical(OPTIMIZERS):
        extra = []
        if optimizer.option_formulas:
            extra = ["Options:", "", *[f"    {formula}" for _, formula in optimizer.option_formulas], ""]
        lines += _section(optimizer, extra, "Update")
    lines += [
        "## Schedules",
        "",
        "`schedule Name(...)`, after the optimizer, changes its `lr` after every epoch of `fit` as",
        "`torch.optim.lr_scheduler`'s class of that name does when `scheduler.step()` ends each epoch: the lrs are",
        "PyTorch's to the last bit. e counts the schedule's steps (0 when the model is made; `lr_0` is the lr of the",
        "first epoch), `base_lr` is the optimizer's lr as written. The schedule's state (`schedule_epoch`, `base_lr`)",
        'is saved with the optimizer\'s, so `load` then `fit(initial_epoch=e)` resumes exactly; `history["lr"]` holds',
        "the lr of each epoch, and `model.schedule_step()` steps it in a loop of your own.",
        "",
    ]
    for schedule in canonical(SCHEDULES):
        lines += _section(schedule, [], "Rule")
    lines += ["## Initializers", "", "| name | distribution | note |", "|---|---|---|"]
    for init in canonical(INITS):
        lines.append(f"| `{init.name}` | {init.formula} | {init.summary} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
